"""Kubeflow's controllers, simulated on a real API server: one module per upstream operator.

Each module's docstring is a table of the upstream behaviours it reproduces and the upstream file each
follows; ``kubeharness.kubeflow`` starts them all (see its ``Kubeflow``).
"""
