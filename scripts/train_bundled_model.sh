#!/usr/bin/env bash
# Reproduce the bundled ensemble, src/mnistlab/models/digits.safetensors,
# digits-lowres.safetensors and digits-bitmap.safetensors: train the `handwriting` recipe
# (small CNN, MNIST + augmented copies with European 1s and 7s) three times on the torch
# engine, on the CPU: the second time with a quarter of the copies seen at low resolution
# and another seed (--set lowres=0.25 --set seed=2), the third with those low-resolution
# copies made black and white, as bitmap scans, and a third seed (--set binary=1 --set
# seed=3); copy all into the package and print their test accuracy. The files they replace
# are kept in $OUT/previous/.
#
#     scripts/train_bundled_model.sh               # about 15 min on 2 quiet CPU cores
#     BENCH=1 scripts/train_bundled_model.sh       # then the writers benchmark, old vs new
#                                                  #   (writers sets, MNIST test, robustness)
#
# Needs MNIST where mnistlab finds it (cache, MNISTLAB_MIRRORS=file:///.../datasets, or the
# internet). Extra arguments go to every `mnistlab train` run (e.g. --set copies=3). Runs
# niced: the machine stays usable.
set -euo pipefail
cd "$(dirname "$0")/.."

MNISTLAB=${MNISTLAB:-.venv/bin/mnistlab}
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-runs/handwriting-bundled-$(date +%Y%m%d-%H%M%S)}
MODELS=src/mnistlab/models
# member file : extra recipe settings
MEMBERS=("digits.safetensors:"
         "digits-lowres.safetensors:--set lowres=0.25 --set seed=2"
         "digits-bitmap.safetensors:--set lowres=0.25 --set binary=1 --set seed=3")

for member in "${MEMBERS[@]}"; do
    name=${member%%:*}
    read -r -a settings <<< "${member#*:}"
    nice -n 19 "$MNISTLAB" train --recipe handwriting --engine torch --device cpu \
        --out "$OUT/${name%.safetensors}" "${settings[@]}" "$@"
done

mkdir -p "$OUT/previous" "$MODELS"
for member in "${MEMBERS[@]}"; do
    name=${member%%:*}
    if [ -f "$MODELS/$name" ]; then cp "$MODELS/$name" "$OUT/previous/$name"; fi
done
for member in "${MEMBERS[@]}"; do  # only once all trained: never half an ensemble
    name=${member%%:*}
    cp "$OUT/${name%.safetensors}/model.safetensors" "$MODELS/$name.tmp"
done
for member in "${MEMBERS[@]}"; do
    name=${member%%:*}
    mv "$MODELS/$name.tmp" "$MODELS/$name"
done

"$PYTHON" - "$OUT" "$MODELS" "${MEMBERS[@]%%:*}" <<'PY'
import json, sys
from pathlib import Path

run, models, names = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
for name in names:
    m = json.loads((run / name.removesuffix(".safetensors") / "metrics.json").read_text())
    target = models / name
    print(f"{target}: {target.stat().st_size / 2**20:.2f} MiB, {m['params']:,} params, "
          f"test accuracy {m['accuracy']:.4f} on {m['num_samples']:,} MNIST test digits "
          f"({m['training_time_s']:.0f} s training)")
PY

if [ "${BENCH:-0}" = 1 ]; then
    previous=()  # the ensemble replaced, as one comma-joined --model
    for member in "${MEMBERS[@]}"; do
        name=${member%%:*}
        if [ -f "$OUT/previous/$name" ]; then previous+=("$OUT/previous/$name"); fi
    done
    if [ ${#previous[@]} -gt 0 ]; then
        previous=(--model "$(IFS=,; echo "${previous[*]}")")
    fi
    nice -n 19 "$PYTHON" benchmarks/bench_writers.py "${previous[@]}" --model bundled \
        --json "$OUT/bench_writers.json"
fi
