"""KFP components: thin typed shells over the dmlops modules, grouped by area.

``COMPONENTS`` maps each area to its components; ``dmlops compile`` writes each one to
``components/<area>/<name>.yaml``.
"""

from dmlops.components.ingest import ingest
from dmlops.components.transform import derive_columns, split_by_time
from dmlops.components.validation import compare, infer_schema, validate

COMPONENTS = {
    "data": [ingest, derive_columns, split_by_time, infer_schema, validate, compare],
}

__all__ = ["COMPONENTS", "compare", "derive_columns", "infer_schema", "ingest", "split_by_time", "validate"]
