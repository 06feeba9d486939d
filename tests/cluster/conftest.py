"""Cluster packaging tests import the shared CRD validator (tests/crds.py) and their own helpers."""

import sys
from pathlib import Path

for folder in (Path(__file__).resolve().parent, Path(__file__).resolve().parents[1]):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
