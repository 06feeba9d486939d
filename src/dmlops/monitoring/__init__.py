"""Production monitoring: delayed labels joined to logged predictions (:mod:`~dmlops.monitoring.feedback`),
a production window against the training reference (:mod:`~dmlops.monitoring.monitor`), and the figures
pushed to a Prometheus Pushgateway for the alert rules in ``manifests/`` (:mod:`~dmlops.monitoring.metrics`).
"""
