"""Ingestion, validation, statistics and drift on Parquet datasets (plain Python, no KFP import)."""
