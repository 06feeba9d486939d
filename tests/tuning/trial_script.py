"""A small trial program: prints Katib ``name=value`` lines, one per step, like a training worker.

loss = (x - 3)^2 + 1 / step; it exits 3 when x is above ``--crash-above`` (after printing its metrics)."""

import argparse
import math
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("--x", type=float, required=True)
parser.add_argument("--steps", type=int, default=4)
parser.add_argument("--sleep", type=float, default=0.05)
parser.add_argument("--crash-above", type=float, default=math.inf)
parser.add_argument("--metrics-file", default="")
args = parser.parse_args()

lines = []
for step in range(1, args.steps + 1):
    line = f"epoch={step} loss={(args.x - 3) ** 2 + 1 / step:.6f}"
    print(line, flush=True)
    lines.append(line)
    time.sleep(args.sleep)
if args.metrics_file:
    with open(args.metrics_file, "w") as handle:
        handle.write("\n".join(lines) + "\n")
if args.x > args.crash_above:
    print("simulated crash", file=sys.stderr, flush=True)
    sys.exit(3)
