"""KServe serving of dmlops models: the predictor (``python -m dmlops.serving``), storage layouts and
InferenceServices (:mod:`~dmlops.serving.packaging`), the canary policy (:mod:`~dmlops.serving.rollout`),
and rollouts on local model servers or KServe (:mod:`~dmlops.serving.deploy`, :mod:`~dmlops.serving.local`).

Modules are imported on use: the predictor needs ``kserve`` and the model's framework, the rest does not.
"""
