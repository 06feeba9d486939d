"""``python -m dmlops.data.spark <operation> <arguments.json>``: one data operation on the Spark engine
(the contract is in :mod:`dmlops.data.spark`)."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from dmlops.platform import storage

# operation -> (input artifacts, output artifacts)
ARTIFACTS = {
    "derive_columns": (["dataset"], ["output", "quarantine"]),
    "split_by_time": (["dataset"], ["train", "eval", "quarantine"]),
    "infer_schema": (["dataset"], ["schema"]),
    "validate": (["dataset", "schema"], ["report", "html"]),
    "compare": (["reference", "current"], ["report", "html"]),
    "running_means": (["dataset"], ["output"]),
    "feast_training_set": (["entities"], ["training_set", "report"]),
}


def _derive_columns(a: dict[str, Any]) -> dict[str, Any]:
    from dmlops.data.transform import derive_columns

    reason = a.get("quarantine_reason", "quarantined by rule")
    result = derive_columns(a["dataset"], a["output"], a["quarantine"], columns=a["columns"],
                            quarantine_when=a.get("quarantine_when", ""), quarantine_reason=reason, engine="spark")
    return {"output": {**result.metadata(), "rows": result.rows_out, "derived_columns": sorted(a["columns"])},
            "quarantine": {"rows": result.rows_quarantined, "reason": reason}}


def _split_by_time(a: dict[str, Any]) -> dict[str, Any]:
    from dmlops.data.transform import split_by_time

    result = split_by_time(a["dataset"], a["train"], a["eval"], a["quarantine"], time_column=a["time_column"],
                           eval_from=a["eval_from"], gap=a.get("gap", ""), engine="spark")
    return {
        "train": {"rows": result.rows_train, "time_min": result.train_time_min, "time_max": result.train_time_max,
                  "time_column": a["time_column"]},
        "eval": {"rows": result.rows_eval, "time_min": result.eval_time_min, "time_max": result.eval_time_max,
                 "time_column": a["time_column"]},
        "quarantine": {"rows": result.rows_quarantined, "split": result.metadata()},
    }


def _infer_schema(a: dict[str, Any]) -> dict[str, Any]:
    from dmlops.data.validation import infer_schema, schema_json

    document = infer_schema(a["dataset"], max_categories=a.get("max_categories", 50), engine="spark")
    Path(a["schema"]).write_text(schema_json(document), encoding="utf-8")
    return {"schema": {"columns": len(document["columns"]), "row_count": document["row_count"],
                       "types": {name: rules.get("type", "") for name, rules in document["columns"].items()}}}


def _validate(a: dict[str, Any]) -> dict[str, Any]:
    from dmlops.data.validation import validate

    result = validate(a["dataset"], a["schema"], engine="spark")
    Path(a["report"]).write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
    Path(a["html"]).write_text(result.to_html(), encoding="utf-8")
    print(result.summary())
    return {"report": {"passed": result.passed, "rows": result.rows, "checks": result.checks,
                       "errors": len(result.errors), "warnings": len(result.warnings)},
            "metrics": result.metrics(), "raise": lambda: result.raise_for(a.get("fail_on", "error"))}


def _compare(a: dict[str, Any]) -> dict[str, Any]:
    from dmlops.data.drift import compare

    result = compare(a["reference"], a["current"], columns=list(a.get("columns") or []) or None,
                     psi_threshold=a.get("psi_threshold", 0.2),
                     categorical_threshold=a.get("categorical_threshold", 0.1),
                     categorical_method=a.get("categorical_method", "jensen-shannon"), engine="spark")
    Path(a["report"]).write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
    Path(a["html"]).write_text(result.to_html(), encoding="utf-8")
    print(result.summary())
    return {"report": {"drifted": result.drifted, "drifted_columns": result.drifted_columns,
                       "skipped": result.skipped},
            "metrics": result.metrics(), "outputs": {"drifted": result.drifted}}


def _running_means(a: dict[str, Any]) -> dict[str, Any]:
    from dmlops.features.aggregates import running_means

    result = running_means(a["dataset"], a["output"], entity_column=a["entity_column"], time_column=a["time_column"],
                           means=a["means"], count_column=a["count_column"], period=a.get("period", "1 day"),
                           available_after=a.get("available_after", "0 seconds"), engine="spark")
    return {"output": {"rows": result.rows_out, **result.metadata()}}


def _feast_training_set(a: dict[str, Any]) -> dict[str, Any]:
    from dmlops.features.retrieval import build_training_set

    result = build_training_set(a["store"], a["entities"], a["training_set"], features=a["features"],
                                timestamp_column=a["timestamp_column"],
                                full_feature_names=a.get("full_feature_names", True), engine="spark")
    Path(a["report"]).write_text(result.markdown(), encoding="utf-8")
    return {"training_set": {"rows": result.rows_out, **result.metadata()}, "report": result.metadata()}


OPERATIONS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "derive_columns": _derive_columns, "split_by_time": _split_by_time, "infer_schema": _infer_schema,
    "validate": _validate, "compare": _compare, "running_means": _running_means,
    "feast_training_set": _feast_training_set,
}


def _is_uri(value: str) -> bool:
    return "://" in value and not value.startswith("file://")


def _local(value: str) -> str:
    return value[len("file://"):] if value.startswith("file://") else value


def run(operation: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """Run ``operation`` with ``arguments`` (artifact paths or URIs): read the inputs, write the outputs and
    the metadata document; the metadata document's content is returned."""
    if operation not in OPERATIONS:
        raise ValueError(f"unknown operation {operation!r}; one of {sorted(OPERATIONS)}")
    inputs, outputs = ARTIFACTS[operation]
    missing = [name for name in [*inputs, *outputs] if not arguments.get(name)]
    if missing:
        raise ValueError(f"{operation}: arguments lack {missing} (paths or URIs of the artifacts)")
    local = dict(arguments)
    uploads: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="dmlops-spark-job-") as folder:
        for name in inputs:
            if _is_uri(arguments[name]):
                filesystem, path = storage.filesystem(arguments[name])
                local[name] = str(Path(folder) / f"in-{name}")
                filesystem.get(path, local[name])
            else:
                local[name] = _local(arguments[name])
        for name in outputs:
            if _is_uri(arguments[name]):
                local[name] = str(Path(folder) / f"out-{name}")
                uploads[name] = arguments[name]
            else:
                local[name] = _local(arguments[name])
                Path(local[name]).parent.mkdir(parents=True, exist_ok=True)
        document = OPERATIONS[operation](local)
        finish = document.pop("raise", None)
        for name, uri in uploads.items():
            filesystem, path = storage.filesystem(uri)
            filesystem.put(local[name], path)
        if arguments.get("metadata"):
            _write(arguments["metadata"], json.dumps(document, indent=2, default=str), folder)
    if finish:
        finish()
    return document


def _write(target: str, text: str, folder: str) -> None:
    if _is_uri(target):
        staged = Path(folder) / "metadata.json"
        staged.write_text(text, encoding="utf-8")
        filesystem, path = storage.filesystem(target)
        filesystem.put(str(staged), path)
    else:
        Path(_local(target)).parent.mkdir(parents=True, exist_ok=True)
        Path(_local(target)).write_text(text, encoding="utf-8")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: python -m dmlops.data.spark <{'|'.join(OPERATIONS)}> <arguments.json>", file=sys.stderr)
        return 2
    operation, arguments_path = argv
    try:
        arguments = json.loads(Path(arguments_path).read_text(encoding="utf-8"))
        if not isinstance(arguments, dict):
            raise ValueError(f"{arguments_path} must hold a JSON object of the operation's arguments")
        run(operation, arguments)
    except Exception as error:
        print(f"dmlops.data.spark {operation}: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
