"""Robustness of the flights model: accuracy and AUC under PGD, FGSM and category swaps, and PGD's AUC loss
as a ratio to that of random moves of the same size, measured in the same run.

Reads the newest local run of the flights pipeline (``make demo`` writes it under ``local_outputs/``) or
the run folder given as the first argument: the model of its ``train`` step and its eval set.

Run: ``.venv/bin/python bench/robustness.py [RUN_FOLDER]``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from dmlops.training.robustness import assess

MODEL = "train/model"
EVAL_SET = "feast-training-set-2/training_set"
EPSILONS = (0.1, 0.25, 0.5)


def newest_run(root: Path) -> Path | None:
    runs = [path for path in root.glob("flights-*") if (path / MODEL / "metadata.json").exists()]
    return max(runs, key=lambda path: path.stat().st_mtime) if runs else None


def main() -> int:
    run = Path(sys.argv[1]) if len(sys.argv) > 1 else newest_run(Path("local_outputs"))
    if run is None:
        print("robustness: no local flights run with a trained model under local_outputs/; run `make demo` first")
        return 1
    print(f"robustness of {run / MODEL} on {run / EVAL_SET}")
    print("| epsilon (std) | clean acc | random acc | FGSM acc | PGD acc | worst swap acc | clean AUC | random AUC "
          "| PGD AUC | PGD AUC loss / random AUC loss | seconds |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for epsilon in EPSILONS:
        started = time.perf_counter()
        report = assess(str(run / MODEL), str(run / EVAL_SET), epsilon=epsilon, pgd_steps=10, max_rows=20000)
        seconds = time.perf_counter() - started
        swap = min(value["accuracy"] for value in report.category_swaps.values())
        random_loss = report.clean["auc"] - report.random["auc"]
        pgd_loss = report.clean["auc"] - report.pgd["auc"]
        ratio = f"{pgd_loss / random_loss:.0f}x" if random_loss > 0 else "random costs nothing"
        print(f"| {epsilon} | {report.clean['accuracy']:.4f} | {report.random['accuracy']:.4f} | "
              f"{report.fgsm['accuracy']:.4f} | {report.pgd['accuracy']:.4f} | {swap:.4f} | {report.clean['auc']:.4f} | "
              f"{report.random['auc']:.4f} | {report.pgd['auc']:.4f} | {ratio} | {seconds:.1f} |")
    print("PGD AUC loss / random AUC loss: how many times more ranking quality a worst-case move within epsilon "
          "costs than a random move of the same size (1x: no more fragile to an adversary than to noise).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
