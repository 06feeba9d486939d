"""Choosing where a platform step runs: on the cluster it is in, or as local processes."""

from __future__ import annotations

import os
from pathlib import Path

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
BACKENDS = ("local", "kubernetes")


def in_cluster(service_account_dir: Path = SERVICE_ACCOUNT_DIR) -> bool:
    """Whether this process runs in a pod with a service account (API host set and token mounted)."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and (service_account_dir / "token").is_file()


def resolve_backend(backend: str, service_account_dir: Path = SERVICE_ACCOUNT_DIR) -> str:
    """``"local"`` or ``"kubernetes"``; ``"auto"`` picks kubernetes inside a pod, local elsewhere."""
    if backend == "auto":
        return "kubernetes" if in_cluster(service_account_dir) else "local"
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; use one of: auto, {', '.join(BACKENDS)}")
    return backend
