"""KFP components: thin typed shells over the dmlops modules, grouped by area.

``COMPONENTS`` maps each area to its components; ``dmlops compile`` writes each one to
``components/<area>/<name>.yaml``.
"""

from dmlops.components.features import (feast_apply, feast_materialize, feast_online_features, feast_source,
                                        feast_training_set, running_means)
from dmlops.components.ingest import ingest
from dmlops.components.transform import derive_columns, split_by_time
from dmlops.components.validation import compare, infer_schema, validate

COMPONENTS = {
    "data": [ingest, derive_columns, split_by_time, infer_schema, validate, compare],
    "features": [feast_source, feast_apply, feast_materialize, feast_training_set, feast_online_features,
                 running_means],
}

__all__ = [
    "COMPONENTS", "compare", "derive_columns", "feast_apply", "feast_materialize", "feast_online_features",
    "feast_source", "feast_training_set", "infer_schema", "ingest", "running_means", "split_by_time", "validate",
]
