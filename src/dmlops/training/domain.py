"""The domain of each feature as the training split saw it, saved in the export's metadata
(``feature_domain``) so the predictor can tell a request outside it: the range of numeric features, the
categories of categorical ones (when the vocabulary holds every value seen) and whether nulls occurred.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dmlops.training.data import FeatureSpec, Preprocessing


def fit_domain(table: pa.Table, spec: FeatureSpec, preprocessing: Preprocessing) -> dict[str, dict[str, Any]]:
    """``{feature: {"min", "max", "nulls"}}`` for numeric features and ``{feature: {"categories", "nulls"}}``
    for categorical ones; ``categories`` is left out when ``max_categories`` cut the vocabulary short."""
    domain: dict[str, dict[str, Any]] = {}
    for name in spec.numeric:
        values = pc.cast(table[name], pa.float64())
        finite = pc.filter(values, pc.is_finite(values))  # nulls and NaN are dropped too
        bounds = pc.min_max(finite).as_py()  # both None when no value is finite
        domain[name] = {"min": bounds["min"], "max": bounds["max"], "nulls": len(finite) < len(values)}
    for name in spec.categorical:
        column = pc.cast(table[name], pa.string())
        vocabulary = preprocessing.categorical[name]
        entry: dict[str, Any] = {"nulls": bool(column.null_count)}
        if len(vocabulary) == pc.count_distinct(column, mode="only_valid").as_py():
            entry["categories"] = list(vocabulary)
        domain[name] = entry
    return domain
