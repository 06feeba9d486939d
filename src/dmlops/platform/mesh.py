"""Istio sidecars in the pods that dmlops starts (training workers, Katib trials).

Kubeflow's profile namespaces have Istio sidecar injection on. A Job's pod that gets a sidecar never
completes: its training container exits, the istio-proxy container keeps running (kubeflow/kubeflow#3935;
kubeflow/trainer docs/legacy-v1/user-guides/pytorch.md, tensorflow.md, mpi.md). Every pod template dmlops
builds therefore carries ``sidecar.istio.io/inject: "false"``, unless the cluster settings ask for
sidecars (``istio_sidecar: true`` in :mod:`dmlops.platform.cluster_settings`, for a mesh that admits only
pods with one), which sets :data:`ISTIO_SIDECAR_ENV` in every step.
"""

from __future__ import annotations

import os

ISTIO_INJECT_ANNOTATION = "sidecar.istio.io/inject"
ISTIO_SIDECAR_ENV = "DMLOPS_ISTIO_SIDECAR"


def pod_annotations() -> dict[str, str]:
    """Annotations of a pod dmlops starts: no Istio sidecar, unless :data:`ISTIO_SIDECAR_ENV` is "true"
    (then the namespace's injection policy decides)."""
    if os.environ.get(ISTIO_SIDECAR_ENV, "").lower() == "true":
        return {}
    return {ISTIO_INJECT_ANNOTATION: "false"}
