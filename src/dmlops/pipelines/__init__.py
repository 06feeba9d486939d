"""KFP pipelines composed from dmlops components, by name."""

from dmlops.pipelines.flights import flights

PIPELINES = {"flights": flights}
