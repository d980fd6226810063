"""Digits from writers outside MNIST: the bundled model (or any) per class, beside MNIST test,
the robustness kinds, predict latency and file size.

    python benchmarks/bench_writers.py [--model OLD.safetensors --model A.safetensors,B.safetensors]
        [--views on|off|both] [--count 2000] [--seed 0] [--mnist-count 10000]
        [--robust-count 2000] [--json OUT]

The writers set (``benchmarks/writers_set.py``, never trained on) is encoded as PNG/JPEG
files and read the way ``mnistlab predict IMAGE`` reads a file: ``decode_image`` at the
working size, then ``preprocess_image``. Each image is preprocessed once and every model
is scored on the same arrays, read in the recognizer's test-time views (``--views off``: one
view, the digit as it is; ``both``: each model both ways, side by side). The robustness
rows are ``bench_robustness.py``'s kinds on the first ``--robust-count`` MNIST test digits
(goal: within 1.5 points of clean). Latency is one ``decode_image`` + ``recognize_image``
of a file, in-process, p50 and p99 over ``--repeat`` calls, taking turns over 280x280
drawings and scans; phone photos (300-640 px JPEGs, where preprocessing dominates) are
timed apart.

With scikit-learn installed, real writers too: the UCI optdigits test set (13 writers on
forms, outside MNIST; ``benchmarks/optdigits_set.py``) as small scans of its 8x8 grids and
of 32x32 black-and-white bitmaps rebuilt from them, per class (``--optdigits 0`` leaves
them out).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import optdigits_set
from common import print_table
from mnistlab.handwriting.preprocess import WORK_MAX_SIDE, decode_image, preprocess_image
from mnistlab.handwriting.recognizer import Recognizer, bundled_model_paths
from mnistlab.handwriting.robustness import ROBUSTNESS_KINDS, make_robustness_variants
from writers_set import RENDERS, STYLES, make_writers_set

GOAL_WRITERS = 0.97
GOAL_POINTS = 1.5
GOAL_P99_MS = 20.0
GOAL_MIB = 5.0


def read_as_predict(files: list[bytes], tag: str) -> np.ndarray:
    """Image files read the way ``mnistlab predict`` reads one: (n, 28, 28) uint8."""
    return np.stack([
        preprocess_image(decode_image(data, name=f"{tag}[{i}]", max_side=WORK_MAX_SIDE),
                         name=f"{tag}[{i}]")
        for i, data in enumerate(files)
    ])  # fmt: skip


def writers_inputs(count: int, seed: int):
    """Preprocessed writers digits (n, 28, 28), labels, styles, renders."""
    digits = make_writers_set(count, seed)
    seen = read_as_predict([d.data for d in digits], "writers")
    labels = np.array([d.label for d in digits])
    return seen, labels, [d.style for d in digits], [d.render for d in digits]


OPTDIGITS_SETS = {  # result key: (title, per-class row label, made from bitmaps)
    "optdigits": ("optdigits scans", "scans", False),
    "optdigits_bitmaps": ("optdigits as bitmaps", "bitmaps", True),
}


def optdigits_inputs(count: int, seed: int) -> dict:
    """Each optdigits set (``OPTDIGITS_SETS``) preprocessed: {key: ((n, 28, 28), labels,
    renders)}; empty without sklearn."""
    if not count or not optdigits_set.available():
        return {}
    out = {}
    for key, (_, _, bitmaps) in OPTDIGITS_SETS.items():
        digits = optdigits_set.make_optdigits_set(count, seed, bitmaps=bitmaps)
        seen = read_as_predict([d.data for d in digits], key)
        out[key] = seen, np.array([d.label for d in digits]), np.array([d.render for d in digits])
    return out


def robustness_inputs(digits: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """bench_robustness.py's inputs: each kind's variants of ``digits``, preprocessed."""
    out = {}
    for kind in ("preprocessed only", *ROBUSTNESS_KINDS):
        rng = np.random.default_rng(seed)
        out[kind] = np.stack([
            preprocess_image(d if kind == "preprocessed only"
                             else make_robustness_variants(d, kind, rng), name=f"{kind}[{i}]")
            for i, d in enumerate(digits)
        ])  # fmt: skip
    return out


def latency_ms(recognizer: Recognizer, files: list[bytes], repeat: int) -> tuple[float, float]:
    """p50 and p99 of decode + preprocess + predict of one image file, in ms."""
    for data in files:  # warm up
        recognizer.recognize_image(decode_image(data, max_side=WORK_MAX_SIDE))
    times = []
    for k in range(repeat):
        data = files[k % len(files)]
        started = time.perf_counter()
        recognizer.recognize_image(decode_image(data, max_side=WORK_MAX_SIDE))
        times.append((time.perf_counter() - started) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def predictions(recognizer: Recognizer, x: np.ndarray) -> np.ndarray:
    """The digit a model reads in each MNIST-like uint8 image, in batches of 1000."""
    return np.concatenate(
        [recognizer.probabilities(x[s : s + 1000]).argmax(1) for s in range(0, len(x), 1000)]
    )


def accuracy(recognizer: Recognizer, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-image correctness (bool) of a model on MNIST-like uint8 digits."""
    return predictions(recognizer, x) == y


def top_confusions(y: np.ndarray, read: np.ndarray, n: int) -> dict[str, int]:
    """The ``n`` commonest misreadings, as {"true->read": count}."""
    wrong = Counter((int(a), int(b)) for a, b in zip(y, read, strict=True) if a != b)
    return {f"{a}->{b}": count for (a, b), count in wrong.most_common(n)}


def run(
    models: list[tuple[list[Path] | None, bool]],
    count: int,
    seed: int,
    mnist_count: int,
    robust_count: int,
    repeat: int,
    optdigits: int = 0,
) -> dict:
    """Every measurement, as a JSON-safe dict (also printed as tables)."""
    from mnistlab.datasets import load_data

    started = time.perf_counter()
    w_x, w_y, w_style, w_render = writers_inputs(count, seed)
    print(
        f"writers set: {count} digits preprocessed in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    real = optdigits_inputs(optdigits, seed)
    if optdigits and not real:
        print("optdigits rows left out: `pip install scikit-learn` adds them", file=sys.stderr)
    _, (x_test, y_test) = load_data()
    x_test, y_test = x_test[:mnist_count], y_test[:mnist_count]
    robust = robustness_inputs(x_test[:robust_count], seed) if robust_count else {}
    latency_set = make_writers_set(80, seed + 1)  # every render (a photo is 15% of digits)
    latency_files = [d.data for d in latency_set if d.render in ("canvas_dark", "scan")]
    photo_files = [d.data for d in latency_set if d.render == "photo"][:10]
    latency_files = latency_files[:40]
    bundled = " + ".join(p.name for p in bundled_model_paths())
    results: dict = {"count": count, "seed": seed, "models": []}
    for paths, views in models:
        files = paths if paths is not None else bundled_model_paths()
        rec = Recognizer.from_paths(files, views=views)
        name = " + ".join(map(str, paths)) if paths is not None else f"bundled ({bundled})"
        name += "" if views else ", one view"
        preds = predictions(rec, w_x)
        ok = preds == w_y
        r: dict = {
            "model": name,
            "views": views,
            "writers": float(ok.mean()),
            "per_class": {d: float(ok[w_y == d].mean()) for d in range(10)},
            "per_render": {
                k: float(ok[np.array(w_render) == k].mean()) for k in RENDERS if k in w_render
            },
            "per_style": {},
            "confusions": top_confusions(w_y, preds, 8),
        }
        for label in range(10):
            for style in STYLES[label]:
                mask = (w_y == label) & (np.array(w_style) == style)
                if mask.any():
                    r["per_style"][f"{label}:{style}"] = float(ok[mask].mean())
        for key, (o_x, o_y, o_render) in real.items():
            o_read = predictions(rec, o_x)
            o_ok = o_read == o_y
            r[key] = {
                "n": len(o_y), "overall": float(o_ok.mean()),
                "per_class": {d: float(o_ok[o_y == d].mean()) for d in range(10)},
                "jpeg": float(o_ok[o_render == "scan_jpeg"].mean()),
                "confusions": top_confusions(o_y, o_read, 6),
            }  # fmt: skip
        r["mnist_test"] = float(accuracy(rec, x_test, y_test).mean())
        if robust:
            clean = float(accuracy(rec, x_test[:robust_count], y_test[:robust_count]).mean())
            r["robust_clean"] = clean
            r["robustness"] = {
                k: float(accuracy(rec, v, y_test[:robust_count]).mean()) for k, v in robust.items()
            }
            r["worst_points"] = min(0.0, *((a - clean) * 100 for a in r["robustness"].values()))
        r["p50_ms"], r["p99_ms"] = latency_ms(rec, latency_files, repeat)
        r["photo_p50_ms"], r["photo_p99_ms"] = latency_ms(rec, photo_files, max(3, repeat // 3))
        r["mib"] = sum(f.stat().st_size for f in files) / 2**20
        r["params"] = rec.count_params()
        results["models"].append(r)
    _print(results, mnist_count, robust_count)
    return results


def _print(results: dict, mnist_count: int, robust_count: int) -> None:
    ms = results["models"]
    cols = ("", *[f"model {i + 1}" for i in range(len(ms))])
    rows = [(f"digit {d}", *[f"{m['per_class'][d]:.3f}" for m in ms]) for d in range(10)]
    rows.append((f"writers overall (goal >= {GOAL_WRITERS})", *[f"{m['writers']:.4f}" for m in ms]))
    for k in RENDERS:
        if k in ms[0]["per_render"]:
            rows.append((f"  render {k}", *[f"{m['per_render'][k]:.3f}" for m in ms]))
    for key, (title, label, _) in OPTDIGITS_SETS.items():
        if key not in ms[0]:
            continue
        rows.append((f"real writers: {title} ({ms[0][key]['n']:,})",
                     *[f"{m[key]['overall']:.4f}" for m in ms]))  # fmt: skip
        rows.append(("  of them JPEG", *[f"{m[key]['jpeg']:.3f}" for m in ms]))
        for d in range(10):
            rows.append((f"  {label} {d}",
                         *[f"{m[key]['per_class'][d]:.3f}" for m in ms]))  # fmt: skip
    rows.append(
        (f"MNIST test ({mnist_count:,}; goal >= 0.995)", *[f"{m['mnist_test']:.4f}" for m in ms])
    )
    if robust_count:
        rows.append(
            (f"robust: clean ({robust_count:,})", *[f"{m['robust_clean']:.4f}" for m in ms])
        )
        for k in ms[0]["robustness"]:
            rows.append((f"robust: {k}", *[f"{m['robustness'][k]:.4f}" for m in ms]))
        rows.append(
            (
                f"worst kind, points (goal >= -{GOAL_POINTS})",
                *[f"{m['worst_points']:+.2f}" for m in ms],
            )
        )
    rows.append(
        (
            f"predict drawing/scan p50 / p99 ms (goal p99 <= {GOAL_P99_MS:g})",
            *[f"{m['p50_ms']:.1f} / {m['p99_ms']:.1f}" for m in ms],
        )
    )
    rows.append(
        (
            "  a phone photo (300-640 px JPEG): p50 / p99 ms",
            *[f"{m['photo_p50_ms']:.1f} / {m['photo_p99_ms']:.1f}" for m in ms],
        )
    )
    rows.append((f"file MiB (goal <= {GOAL_MIB:g})", *[f"{m['mib']:.2f}" for m in ms]))
    rows.append(("parameters", *[f"{m['params']:,}" for m in ms]))
    print_table(
        f"Writers outside MNIST: {results['count']:,} digits (seed {results['seed']})", rows, cols
    )
    for i, m in enumerate(ms):
        print(f"model {i + 1}: {m['model']}")
        worst = sorted(m["per_style"].items(), key=lambda kv: kv[1])[:6]
        print("  weakest styles: " + ", ".join(f"{k} {v:.2f}" for k, v in worst))
        print(
            "  top confusions (true->read): "
            + ", ".join(f"{k} x{v}" for k, v in m["confusions"].items())
        )
        for key, (title, _, _) in OPTDIGITS_SETS.items():
            if key in m:
                print(f"  {title} confusions: "
                      + ", ".join(f"{k} x{v}" for k, v in m[key]["confusions"].items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model",
        action="append",
        help="model file, or files joined by commas for an ensemble; repeatable; 'bundled' "
        "for the bundled ensemble (the default)",
    )
    parser.add_argument(
        "--views",
        choices=("on", "off", "both"),
        default="on",
        help="read in the test-time views (on, the default), as is (off), or each model both ways",
    )
    parser.add_argument("--count", type=int, default=2000, help="writers digits (default 2000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mnist-count", type=int, default=10000)
    parser.add_argument(
        "--robust-count", type=int, default=2000, help="MNIST digits per robustness kind (0: skip)"
    )
    parser.add_argument("--repeat", type=int, default=300, help="latency samples")
    parser.add_argument(
        "--optdigits", type=int, default=1797, help="optdigits digits (0: skip; needs sklearn)"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    views = {"on": (True,), "off": (False,), "both": (False, True)}[args.views]
    models = [
        None if m == "bundled" else [Path(p) for p in m.split(",")]
        for m in args.model or ["bundled"]
    ]
    results = run(
        [(paths, v) for paths in models for v in views],
        args.count,
        args.seed,
        args.mnist_count,
        args.robust_count,
        args.repeat,
        args.optdigits,
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
