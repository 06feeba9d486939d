"""The console of a local run: a line per step, the executor logs in files, a failed step's own error."""

import pytest
from kfp import dsl
from kfp.dsl import Dataset, Output

from dmlops.cli import run_local
from dmlops.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def write_rows(rows: int, dataset: Output[Dataset]):
    """Writes ``rows`` lines and says so in the metadata."""
    with open(dataset.path, "w") as out:
        out.write("x\n" * rows)
    dataset.metadata["rows"] = rows


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def refuse(reason: str):
    """Fails with ``reason``."""
    raise ValueError(reason)


@dsl.pipeline(name="two-steps")
def two_steps(rows: int = 3, more_rows: int = 4):
    first = write_rows(rows=rows).set_display_name("write the rows")
    write_rows(rows=more_rows).after(first).set_display_name("write more rows")


@dsl.pipeline(name="fails")
def fails():
    rows = write_rows(rows=2).set_display_name("write the rows")
    refuse(reason="the quarterly numbers are missing").after(rows).set_display_name("refuse")


def test_a_run_prints_a_line_per_step_start_and_end_and_keeps_the_logs(tmp_path, capsys):
    run_dir = run_local(two_steps, {"rows": 5, "more_rows": 6}, tmp_path)
    captured = capsys.readouterr()
    lines = (captured.out + captured.err).splitlines()
    step_lines = [line.strip() for line in lines if line.strip()[:1] in "▶✓"]
    assert [line.split("  ")[0] for line in step_lines] == [
        "▶ write the rows", "✓ write the rows", "▶ write more rows", "✓ write more rows"]
    assert step_lines[1].endswith("5 rows") and step_lines[3].endswith("6 rows")
    assert len(lines) < 20, "\n".join(lines)
    assert "Got executor_input" not in captured.out + captured.err
    assert "non-Python base image" not in captured.err and "display_name" not in captured.err
    logs = sorted(path.name for path in (run_dir / "logs").iterdir())
    assert logs == ["write-rows-2.log", "write-rows.log"]
    assert "Got executor_input" in (run_dir / "logs" / "write-rows.log").read_text()


def test_a_failed_step_shows_its_own_error_and_its_log(tmp_path, capsys):
    with pytest.raises(RuntimeError, match="Inner task failed"):
        run_local(fails, {}, tmp_path)
    shown = capsys.readouterr().err
    assert "✗ refuse  failed after" in shown
    assert "ValueError: the quarterly numbers are missing" in shown
    log = next(tmp_path.glob("fails-*/logs/refuse.log"))
    assert f"full log of refuse: {log}" in shown
    assert "Got executor_input" not in shown and "Got executor_input" in log.read_text()


def test_verbose_prints_the_executor_logs(tmp_path, capsys):
    run_local(two_steps, {}, tmp_path, verbose=True)
    assert "Got executor_input" in capsys.readouterr().err
