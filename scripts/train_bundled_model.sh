#!/usr/bin/env bash
# Reproduce the bundled model, src/mnistlab/models/digits.safetensors: train the
# `handwriting` recipe (small CNN, MNIST + augmented copies with European 1s and 7s) on the
# torch engine, on the CPU, copy the trained weights into the package and print the test
# accuracy. The model it replaces is kept as $OUT/previous.safetensors.
#
#     scripts/train_bundled_model.sh               # about 12 min on 2 busy CPU cores
#     BENCH=1 scripts/train_bundled_model.sh       # then the writers benchmark, old vs new
#                                                  #   (writers set, MNIST test, robustness)
#
# Needs MNIST where mnistlab finds it (cache, MNISTLAB_MIRRORS=file:///.../datasets, or the
# internet). Extra arguments go to `mnistlab train` (e.g. --set copies=3). Runs niced: the
# machine stays usable.
set -euo pipefail
cd "$(dirname "$0")/.."

MNISTLAB=${MNISTLAB:-.venv/bin/mnistlab}
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-runs/handwriting-bundled-$(date +%Y%m%d-%H%M%S)}
TARGET=src/mnistlab/models/digits.safetensors

nice -n 19 "$MNISTLAB" train --recipe handwriting --engine torch --device cpu --out "$OUT" "$@"
mkdir -p "$(dirname "$TARGET")"
if [ -f "$TARGET" ]; then cp "$TARGET" "$OUT/previous.safetensors"; fi
cp "$OUT/model.safetensors" "$TARGET"

"$PYTHON" - "$OUT" "$TARGET" <<'PY'
import json, sys
from pathlib import Path

run, target = Path(sys.argv[1]), Path(sys.argv[2])
m = json.loads((run / "metrics.json").read_text())
print(f"bundled model: {target} ({target.stat().st_size / 2**20:.2f} MiB, {m['params']:,} params)")
print(f"test accuracy: {m['accuracy']:.4f} on {m['num_samples']:,} MNIST test digits"
      f" ({m['training_time_s']:.0f} s training)")
PY

if [ "${BENCH:-0}" = 1 ]; then
    previous=()
    if [ -f "$OUT/previous.safetensors" ]; then previous=(--model "$OUT/previous.safetensors"); fi
    nice -n 19 "$PYTHON" benchmarks/bench_writers.py "${previous[@]}" --model "$TARGET" \
        --json "$OUT/bench_writers.json"
fi
