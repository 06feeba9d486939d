"""KFP components: thin typed shells over the dmlops modules, grouped by area.

``COMPONENTS`` maps each area to its components; ``dmlops compile`` writes each one to
``components/<area>/<name>.yaml``.
"""

from dmlops.components.transform import derive_columns, split_by_time

COMPONENTS = {
    "data": [derive_columns, split_by_time],
}

__all__ = ["COMPONENTS", "derive_columns", "split_by_time"]
