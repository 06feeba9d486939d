"""Overhead per trial of the dmlops local tuner vs raw Optuna, on the same objective, in the same run.

The objective is a small program run as a process (as every trial is): it sleeps ``--trial-seconds`` and
prints ``loss=<value>``. Raw Optuna runs it with ``subprocess.run`` inside ``study.optimize``; dmlops
runs a Katib Experiment over the same parameter with its local tuner (trial template substitution,
local backend, Katib-style metrics collection). Goal: overhead under 5% of the trial time.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

from dmlops.tuning import TuningSpec, build_experiment, trial_job
from dmlops.tuning.local import LocalTuner

PROGRAM = """
import sys, time
x = float(sys.argv[sys.argv.index("--x") + 1])
time.sleep(float(sys.argv[sys.argv.index("--sleep") + 1]))
print(f"loss={(x - 3) ** 2:.6f}", flush=True)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--trial-seconds", type=float, default=1.0)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as scratch:
        program = Path(scratch) / "objective.py"
        program.write_text(PROGRAM)
        command = [sys.executable, str(program), "--sleep", str(args.trial_seconds)]

        def objective(trial: optuna.Trial) -> float:
            x = trial.suggest_float("x", 0, 6)
            output = subprocess.run([*command, "--x", str(x)], capture_output=True, text=True, check=True).stdout
            return float(output.strip().rsplit("=", 1)[1])

        started = time.perf_counter()
        raw = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        raw.optimize(objective, n_trials=args.trials)
        raw_seconds = time.perf_counter() - started

        spec = TuningSpec.from_katib({
            "objective": {"type": "minimize", "objectiveMetricName": "loss"},
            "algorithm": {"algorithmName": "random", "algorithmSettings": [{"name": "random_state", "value": "0"}]},
            "parallelTrialCount": 1, "maxTrialCount": args.trials,
            "parameters": [{"name": "x", "parameterType": "double", "feasibleSpace": {"min": "0", "max": "6"}}],
        })
        template = trial_job("Job", "image", ["python", str(program), "--sleep", str(args.trial_seconds),
                                              "--x", "${trialParameters.x}"])
        experiment = build_experiment(spec, "bench", "default", template)
        started = time.perf_counter()
        result = LocalTuner(experiment, Path(scratch) / "trials").run()
        dmlops_seconds = time.perf_counter() - started
    assert result.count("Succeeded") == args.trials

    raw_per_trial = raw_seconds / args.trials
    dmlops_per_trial = dmlops_seconds / args.trials
    overhead = dmlops_per_trial - raw_per_trial
    share = overhead / args.trial_seconds
    print(f"{args.trials} trials of {args.trial_seconds:.2f} s each")
    print(f"raw optuna      {raw_per_trial * 1000:8.1f} ms/trial")
    print(f"dmlops local    {dmlops_per_trial * 1000:8.1f} ms/trial  ({dmlops_per_trial / raw_per_trial:.3f}x raw)")
    print(f"overhead        {overhead * 1000:8.1f} ms/trial = {share:.1%} of trial time "
          f"({'within' if share < 0.05 else 'ABOVE'} the 5% goal)")


if __name__ == "__main__":
    main()
