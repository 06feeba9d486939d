"""The examples under examples/ are imported from the repository root; the digits as Parquet."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def digits(tmp_path_factory) -> dict[str, str]:
    """scikit-learn's digits as Parquet training (1,347 rows) and evaluation (450 rows) sets."""
    pytest.importorskip("sklearn")
    from examples.digits_torch import write_digits

    folder = tmp_path_factory.mktemp("digits")
    paths = {"train": str(folder / "train.parquet"), "eval": str(folder / "eval.parquet")}
    write_digits(paths["train"], paths["eval"])
    return paths
