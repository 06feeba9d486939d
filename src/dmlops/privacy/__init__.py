"""Privacy and integrity: PII policy and pseudonymization, erasure, model signing."""
