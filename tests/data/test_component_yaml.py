"""Every data component, loaded from its checked-in YAML, runs inside a small pipeline with kfp.local."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
from kfp import components, dsl, local

REPO = Path(__file__).resolve().parents[2]
DATA_YAML = sorted((REPO / "components" / "data").glob("*.yaml"))


def _load():
    return {path.stem: components.load_component_from_file(str(path)) for path in DATA_YAML}


def test_data_components_from_yaml_run_in_a_pipeline(tmp_path):
    csv_path = tmp_path / "events.csv"
    hours = 24 * 40
    pacsv.write_csv(pa.table({
        "at": [f"2024-01-{1 + i // 24 % 28:02d}T{i % 24:02d}:00:00Z" for i in range(hours)],
        "value": [float(i % 17) for i in range(hours)],
        "kind": ["a" if i % 3 else "b" for i in range(hours)],
    }), csv_path)
    loaded = _load()

    @dsl.pipeline(name="data-components-from-yaml")
    def from_yaml(source: str):
        raw = loaded["ingest"](source=source)
        derived = loaded["derive_columns"](
            dataset=raw.outputs["dataset"], columns={"high": "value > 10"},
            quarantine_when="kind = 'b' AND value = 0", quarantine_reason="zero b",
        )
        split = loaded["split_by_time"](dataset=derived.outputs["output"], time_column="at", eval_from="2024-01-20")
        schema = loaded["infer_schema"](dataset=split.outputs["train"])
        loaded["validate"](dataset=split.outputs["eval"], schema=schema.outputs["schema"])
        loaded["compare"](reference=split.outputs["train"], current=split.outputs["eval"])
        loaded["training_window"](reference=derived.outputs["output"], label="high", time_column="at", window_days=10.0)

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"),
               raise_on_error=True)
    from_yaml(source=str(csv_path))

    steps = {path.parent.name: json.loads(path.read_text())["artifacts"]
             for path in (tmp_path / "root").rglob("executor_output.json")}
    assert {path.stem.replace("_", "-") for path in DATA_YAML} <= set(steps), "a data component YAML did not run"
    ingested = steps["ingest"]["dataset"]["artifacts"][0]["metadata"]["rows"]
    assert ingested == hours
    derived = steps["derive-columns"]
    split = steps["split-by-time"]
    rows = {name: split[name]["artifacts"][0]["metadata"]["rows"] for name in ("train", "eval", "quarantine")}
    assert sum(rows.values()) == derived["output"]["artifacts"][0]["metadata"]["rows"]
