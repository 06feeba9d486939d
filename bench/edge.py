"""Edge variants of the flights model: each variant's size and single-row latency as a ratio to the served
model (the ``torch.export`` program behind the served model's request encoding), and its gate figures,
measured in the same run.

Reads the newest local run of the flights pipeline (``make demo`` writes it under ``local_outputs/``) or
the run folder given as the first argument: the model of its ``train`` step, its training set (int8
calibration) and its eval set (the gate). Every variant takes each eval row's raw feature values alone,
as a device does; the served model answers the same row as a request.

Run: ``.venv/bin/python bench/edge.py [RUN_FOLDER]``.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import warnings
from pathlib import Path

from dmlops.serving.edge import VARIANTS, export_edge

MODEL = "train/model"
TRAIN_SET = "feast-training-set/training_set"
EVAL_SET = "feast-training-set-2/training_set"


def newest_run(root: Path) -> Path | None:
    runs = [path for path in root.glob("flights-*") if (path / MODEL / "metadata.json").exists()]
    return max(runs, key=lambda path: path.stat().st_mtime) if runs else None


def main() -> int:
    run = Path(sys.argv[1]) if len(sys.argv) > 1 else newest_run(Path("local_outputs"))
    if run is None:
        print("edge: no local flights run with a trained model under local_outputs/; run `make demo` first")
        return 0
    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime's quantization tips
    warnings.simplefilter("ignore", UserWarning)  # TensorFlow's and LiteRT's notices while converting
    with tempfile.TemporaryDirectory() as folder:
        report = export_edge(str(run / MODEL), str(run / EVAL_SET), str(run / TRAIN_SET),
                             {name: Path(folder) / name for name in VARIANTS}, on_gate_failure="omit")
    print(f"edge variants of {run / MODEL}")
    print(report.markdown())
    served = report.reference
    for variant in report.variants:
        print(f"{variant.name}: size {variant.size_bytes / served['size_bytes']:.2f}x the served model's, "
              f"p50 latency {variant.latency_ms['p50'] / served['latency_p50_ms']:.2f}x "
              f"({'kept' if variant.passed else 'left out'})")
    print("(below 1x: smaller or faster than the served model)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
