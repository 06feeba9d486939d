"""Real Kubernetes under the tests: an envtest API server (``envtest``), its pytest fixtures
(``fixtures``) and RBAC helpers (``rbac``)."""
