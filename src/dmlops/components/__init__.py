"""KFP components: thin typed shells over the dmlops modules, grouped by area.

``COMPONENTS`` maps each area to its components; ``dmlops compile`` writes each one to
``components/<area>/<name>.yaml``.
"""

from dmlops.components.edge import export_edge
from dmlops.components.features import (feast_apply, feast_materialize, feast_online_features, feast_source,
                                        feast_store, feast_training_set, running_means)
from dmlops.components.ingest import ingest
from dmlops.components.monitoring import feedback, monitor
from dmlops.components.registry import register_model, registered_model
from dmlops.components.privacy import erase_subject, pii_scan, pseudonymize
from dmlops.components.robustness import robustness
from dmlops.components.serving import deploy
from dmlops.components.training import evaluate, train
from dmlops.components.transform import derive_columns, split_by_time
from dmlops.components.tuning import tune
from dmlops.components.validation import compare, infer_schema, validate
from dmlops.components.window import training_window

COMPONENTS = {
    "data": [ingest, derive_columns, split_by_time, infer_schema, validate, compare, training_window],
    "features": [feast_store, feast_source, feast_apply, feast_materialize, feast_training_set,
                 feast_online_features, running_means],
    "training": [train, evaluate, robustness],
    "tuning": [tune],
    "serving": [deploy, export_edge],
    "monitoring": [feedback, monitor],
    "registry": [register_model, registered_model],
    "privacy": [pii_scan, pseudonymize, erase_subject],
}

__all__ = [
    "COMPONENTS", "compare", "deploy", "derive_columns", "evaluate", "export_edge", "feast_apply", "feast_materialize",
    "feast_online_features", "feast_source", "feast_store", "feast_training_set", "feedback", "infer_schema", "ingest",
    "monitor", "running_means", "split_by_time", "train", "tune", "validate",
    "erase_subject", "pii_scan", "pseudonymize", "robustness", "register_model", "registered_model",
    "training_window",
]
