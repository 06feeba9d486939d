"""Errors raised for bad input data: each names the source and says what to do."""


class DataError(Exception):
    """Bad or unreadable input data. The message names the source and the fix."""


class IngestError(DataError):
    """A source could not be read or had too many bad rows."""


class SchemaError(DataError):
    """A declared schema is malformed or does not match the data."""


class ValidationFailed(DataError):
    """A dataset broke the checks of its schema."""
