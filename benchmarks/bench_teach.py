"""Teaching a profile: each writer's other digits before and after teaching k misread ones.

    python benchmarks/bench_teach.py [--writers 60] [--per-digit 6] [--seed 0] [--json OUT]
    python benchmarks/bench_teach.py --tune          # choose adapt.py's constants (seed 1000+)

Writers come from ``benchmarks/writers_set.py`` (never trained on): each one a ``Hand`` (a
style per digit, slant, pen, medium) writing ``--per-digit`` of every digit, read the way
``mnistlab predict IMAGE`` reads a file. For each writer the bundled model's misreads are
taught in the order written, k = 1, 3 and 5 of them (fewer when the writer has fewer), and
accuracy is measured on that writer's *other* digits (all but the taught), before and after,
overall, on the writers who had a misread, and per digit. "untaught digits" are the other
digits whose label was not taught: teaching must not make them worse. The cost rows time
``PersonalRecognizer`` against a real SQLite file: one teach (store + features + the new
answer) and one prediction with a full profile (``MAX_EXAMPLES`` examples), p50 / p99.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import print_table
from mnistlab.handwriting import adapt
from mnistlab.handwriting.adapt import PersonalRecognizer, ProfileMemory
from mnistlab.handwriting.preprocess import WORK_MAX_SIDE, decode_image, preprocess_image
from mnistlab.handwriting.profiles import MAX_EXAMPLES, ProfileStore
from mnistlab.handwriting.recognizer import Recognizer
from writers_set import SET_TAG, make_hand, write_digits

KS = (1, 3, 5)
TEACH_TAG = 0x54454143  # "TEAC": this benchmark's own seed stream


def writer_inputs(recognizer: Recognizer, writers: int, per_digit: int, seed: int) -> list[dict]:
    """Each writer's digits, preprocessed, with the model's features and probabilities."""
    out = []
    for w in range(writers):
        rng = np.random.default_rng([SET_TAG, TEACH_TAG, seed, w])
        hand = make_hand(rng)
        labels = [d for _ in range(per_digit) for d in range(10)]
        digits = write_digits(hand, labels, rng)
        images = np.stack([
            preprocess_image(decode_image(d.data, max_side=WORK_MAX_SIDE), name=f"w{w}[{i}]")
            for i, d in enumerate(digits)
        ])  # fmt: skip
        features, probs = recognizer.features_and_probabilities(images)
        out.append({"hand": hand, "images": images, "labels": np.array(labels),
                    "features": features, "probs": probs})  # fmt: skip
    return out


def evaluate(writers: list[dict]) -> dict:
    """Before/after accuracy on each writer's other digits, for each k (see the module doc)."""
    result: dict = {"k": {}}
    for k in KS:
        rows = {"all": [0, 0, 0], "had_misread": [0, 0, 0], "untaught": [0, 0, 0]}
        per_digit = np.zeros((10, 3), dtype=np.int64)  # others: n, right before, right after
        per_writer = []
        for w, data in enumerate(writers):
            y, probs = data["labels"], data["probs"]
            before = probs.argmax(1) == y
            taught = np.flatnonzero(~before)[:k]
            others = np.setdiff1d(np.arange(len(y)), taught)
            if len(taught):
                memory = ProfileMemory.from_features(data["features"][taught], y[taught], taught)
                after = memory.adjust(data["features"], probs).argmax(1) == y
            else:
                after = before
            b, a = before[others], after[others]
            for key, mask in (
                ("all", np.ones(len(others), bool)),
                ("had_misread", np.full(len(others), len(taught) > 0)),
                ("untaught", ~np.isin(y[others], y[taught])),
            ):
                rows[key][0] += int(mask.sum())
                rows[key][1] += int(b[mask].sum())
                rows[key][2] += int(a[mask].sum())
            np.add.at(per_digit, y[others], np.stack([np.ones_like(b), b, a], 1).astype(np.int64))
            if len(taught):
                per_writer.append({
                    "writer": w, "render": data["hand"].render, "taught": len(taught),
                    "taught_digits": [int(d) for d in y[taught]],
                    "styles": [data["hand"].styles[int(d)] for d in y[taught]],
                    "before": float(b.mean()), "after": float(a.mean()),
                })  # fmt: skip
        result["k"][k] = {
            key: {"n": n, "before": rb / max(n, 1), "after": ra / max(n, 1)}
            for key, (n, rb, ra) in rows.items()
        }
        result["k"][k]["per_digit"] = {
            d: {"n": int(n), "before": rb / max(n, 1), "after": ra / max(n, 1)}
            for d, (n, rb, ra) in enumerate(per_digit)
        }
        result["k"][k]["writers"] = per_writer
    return result


def cost(recognizer: Recognizer, writers: list[dict], repeat: int) -> dict:
    """Teach latency and predict p50/p99 with a full profile, on a real SQLite file (ms)."""
    images = np.concatenate([w["images"] for w in writers])
    labels = np.concatenate([w["labels"] for w in writers])
    with tempfile.TemporaryDirectory() as tmp:
        personal = PersonalRecognizer(recognizer, ProfileStore(Path(tmp) / "p.sqlite"))
        teach = []
        for i in range(min(repeat, len(images))):
            started = time.perf_counter()
            personal.teach(images[i : i + 1], [int(labels[i])], "bench")
            teach.append((time.perf_counter() - started) * 1000)
        # A full profile from however few writers: the images cycled, each made distinct by
        # one marked pixel (identical images would replace each other in the store).
        fill = np.resize(images, (MAX_EXAMPLES, *images.shape[1:])).copy()
        flat = fill.reshape(MAX_EXAMPLES, -1)
        flat[np.arange(MAX_EXAMPLES), np.arange(MAX_EXAMPLES) % flat.shape[1]] ^= 1
        fill_labels = np.resize(labels, MAX_EXAMPLES)
        for start in range(0, MAX_EXAMPLES, 100):
            personal.store.teach("bench", fill[start : start + 100],
                                 fill_labels[start : start + 100].tolist())  # fmt: skip
        full = len(personal.memory("bench"))  # features of the full profile, once
        predict = []
        for i in range(repeat):
            started = time.perf_counter()
            personal.recognize_pixels(images[i % len(images)], "bench")
            predict.append((time.perf_counter() - started) * 1000)
        alone = []
        for i in range(repeat):
            started = time.perf_counter()
            recognizer.recognize_pixels(images[i % len(images)])
            alone.append((time.perf_counter() - started) * 1000)
    pct = lambda t, q: float(np.percentile(t, q))  # noqa: E731
    return {
        "teach_p50_ms": pct(teach, 50), "teach_p99_ms": pct(teach, 99),
        "predict_full_p50_ms": pct(predict, 50), "predict_full_p99_ms": pct(predict, 99),
        "predict_alone_p50_ms": pct(alone, 50), "predict_alone_p99_ms": pct(alone, 99),
        "full_profile": full,
    }  # fmt: skip


def report(result: dict, costs: dict | None, writers: int, per_digit: int) -> None:
    """Print the tables."""
    pct = lambda r: f"{r['before']:.3f} -> {r['after']:.3f}"  # noqa: E731
    ks = result["k"]
    rows = [
        (f"{label} (n at k=1: {ks[1][key]['n']})", *[pct(ks[k][key]) for k in KS])
        for key, label in (("all", "every writer's other digits"),
                           ("had_misread", "writers with a misread"),
                           ("untaught", "untaught digits (must not drop)"))
    ]  # fmt: skip
    print_table(
        f"{writers} writers x {per_digit} of each digit: accuracy before -> after teaching",
        rows,
        ("", *[f"k = {k}" for k in KS]),
    )
    print_table(
        "per digit, other digits of every writer: before -> after",
        [(str(d), *[pct(ks[k]["per_digit"][d]) for k in KS]) for d in range(10)],
        ("digit", *[f"k = {k}" for k in KS]),
    )
    print_table(
        "writers with a misread (k = 5): what was taught, their other digits",
        [(str(w["writer"]), w["render"], " ".join(f"{d}:{s}" for d, s in
          zip(w["taught_digits"], w["styles"], strict=True)), f"{w['before']:.3f}",
          f"{w['after']:.3f}") for w in ks[5]["writers"]],
        ("writer", "medium", "taught (digit:style)", "before", "after"),
    )  # fmt: skip
    if costs:
        print_table(
            "cost (ms, p50 / p99)",
            [
                ("teach one example (store + features + new answer)",
                 f"{costs['teach_p50_ms']:.2f} / {costs['teach_p99_ms']:.2f}"),
                (f"predict with a full profile ({costs['full_profile']} examples)",
                 f"{costs['predict_full_p50_ms']:.2f} / {costs['predict_full_p99_ms']:.2f}"),
                ("predict with the model alone",
                 f"{costs['predict_alone_p50_ms']:.2f} / {costs['predict_alone_p99_ms']:.2f}"),
            ],
            ("", "ms"),
        )  # fmt: skip


def tune(recognizer: Recognizer, writers: int, per_digit: int) -> None:
    """A grid over the two constants of ``adapt`` on writers of seeds 1000+ (not the
    benchmark's): k = 3, the other digits and the untaught ones."""
    data = writer_inputs(recognizer, writers, per_digit, seed=1000)
    rows = []
    for floor in (0.6, 0.7, 0.75, 0.8, 0.85, 0.9):
        for weight in (1.0, 2.0, 4.0, 8.0):
            adapt.SIMILARITY_FLOOR, adapt.VOTE_WEIGHT = floor, weight
            r = evaluate(data)["k"]
            rows.append((f"{floor:g}", f"{weight:g}",
                         *[f"{r[k]['had_misread']['after']:.3f}" for k in KS],
                         *[f"{r[k]['untaught']['after'] - r[k]['untaught']['before']:+.3f}"
                           for k in KS]))  # fmt: skip
    base = evaluate(data)["k"][1]["had_misread"]["before"]
    print_table(
        f"tuning writers (seed 1000): writers with a misread, before {base:.3f}",
        rows,
        ("floor", "weight", *[f"after k={k}" for k in KS], *[f"untaught k={k}" for k in KS]),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writers", type=int, default=60)
    parser.add_argument("--per-digit", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", type=Path, help="default: the bundled model")
    parser.add_argument("--repeat", type=int, default=200, help="latency samples")
    parser.add_argument("--tune", action="store_true", help="grid the constants instead")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    recognizer = Recognizer.from_path(args.model)
    if args.tune:
        tune(recognizer, args.writers, args.per_digit)
        return
    started = time.perf_counter()
    writers = writer_inputs(recognizer, args.writers, args.per_digit, args.seed)
    print(f"{args.writers} writers read in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    result = evaluate(writers)
    costs = cost(recognizer, writers, args.repeat) if args.repeat else None
    report(result, costs, args.writers, args.per_digit)
    if args.json:
        args.json.write_text(json.dumps({"result": result, "cost": costs}, indent=1))


if __name__ == "__main__":
    main()
