"""Distributed training of tabular binary classifiers: the worker, its data, checkpoints and exports.

Plain Python: the worker entry point is ``python -m dmlops.training.worker``; frameworks (torch,
TensorFlow, Horovod) are imported only by the strategy that uses them.
"""
