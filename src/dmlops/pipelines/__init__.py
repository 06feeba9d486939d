"""KFP pipelines composed from dmlops components, by name.

``PIPELINES`` is built on first access: steps import feature definitions from this package at run time
and must not pay for (or depend on) tracing every pipeline.
"""


def __getattr__(name: str):
    if name == "PIPELINES":
        from dmlops.pipelines.flights import flights
        from dmlops.pipelines.retrain import retrain

        return {"flights": flights, "retrain": retrain}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
