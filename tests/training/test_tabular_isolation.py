"""Nothing in the launcher, the jobs, the worker, the tuner or the platform knows about the tabular model:
they take any run (:class:`~dmlops.training.config.RunSource`) and never import the tabular trainer."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "dmlops"
GENERIC = sorted([SRC / "training" / "launch.py", SRC / "training" / "jobs.py", SRC / "training" / "worker.py",
                  *(SRC / "tuning").glob("*.py"), *(SRC / "platform").glob("*.py")])
TABULAR_MODULES = {f"dmlops.training.{name}" for name in
                   ("tabular", "loop", "data", "evaluate", "torch_trainer", "tf_trainer", "torch_model")}
TABULAR_NAMES = {"TrainConfig", "TABULAR_ENTRYPOINT", "Preprocessing", "TabularMLP"}


def imports(path: Path) -> set[str]:
    """Every module and name ``path`` imports, as ``module`` and ``module:name``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}:{alias.name}" for alias in node.names}
    return found


@pytest.mark.parametrize("path", GENERIC, ids=lambda path: str(path.relative_to(SRC)))
def test_the_module_imports_nothing_of_the_tabular_trainer(path):
    imported = imports(path)
    assert not {name for name in imported if name.split(":")[0] in TABULAR_MODULES}
    assert not {name for name in imported if name.partition(":")[2] in TABULAR_NAMES}
