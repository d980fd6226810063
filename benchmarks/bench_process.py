"""Whole process, as a user waits: `mnistlab train --recipe fast --engine torch` against the
plain PyTorch script of the public fast recipe (benchmarks/reference_fast.py).

    python benchmarks/bench_process.py                 # 5 rounds, goal <= 0.45x
    python benchmarks/bench_process.py --rounds 3
    python benchmarks/bench_process.py --quick         # smoke run: 6,000 images each
    python benchmarks/bench_process.py --set crop=0    # a recipe setting for mnistlab

Each round runs both commands as fresh processes, one after the other (the order
alternates round by round, after ../shared/tools/wait-quiet when there is one), and
times each from launch to exit. Both read the same MNIST files: the reference script
decodes the official IDX .gz files itself, as such a script does; mnistlab reads them
through its data cache ($MNISTLAB_HOME), warm after a first run (the untimed warm-up
round runs both once, so the page cache and mnistlab's decoded cache are warm alike).

The breakdown of each process (seconds):

  start-up    Python, imports, argument checks (mnistlab: also the imports its recipe
              does before its clocks start, torch's among them)
  data        reading and converting the train and test sets (mnistlab maps the float
              copy in its decoded cache: the pages are read as training first touches
              them, so that part counts as training)
  training    model, optimizer and the training loop
  evaluation  predicting the test set and scoring it
  writing     what the run leaves (mnistlab: model, history, metrics, plots, report;
              the reference script writes nothing)
  exit        from the last phase to the process's end (interpreter shutdown)

mnistlab's phases come from the stamps its runner writes where $MNISTLAB_PHASES points
(experiments/runner.py) and the fast recipe's data_seconds / train_seconds; the
reference script prints its own (--json).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WAIT_QUIET = HERE.parents[1] / "shared" / "tools" / "wait-quiet"
REFERENCE = HERE / "reference_fast.py"
GOAL = 0.45  # mnistlab whole process / the reference script's
PHASES = ("start-up", "data", "training", "evaluation", "writing", "exit")


# --------------------------------------------------------------------------- measuring


def _tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and all its descendants now (from /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            fields = stat[stat.rindex(")") + 2 :].split()
            pid = int(entry)
            children.setdefault(int(fields[1]), []).append(pid)
            rss[pid] = int(fields[21]) * page
        except (OSError, ValueError, IndexError):
            continue
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total


def run_measured(cmd: list[str], env: dict[str, str] | None = None,
                 sample_s: float = 0.02) -> dict[str, Any]:
    """Run ``cmd`` to its end: wall seconds from launch to exit, the launch stamp
    (time.time()), its output, and its peak memory in MiB: the largest resident set of the
    process tree sampled every ``sample_s``, or the kernel's max RSS of the process (and
    of any child it waited for) when that is larger."""
    launched = time.time()
    began = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            done.wait(sample_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out: list[bytes] = []
    err: list[bytes] = []
    readers = [threading.Thread(target=lambda s=s, b=b: b.append(s.read()), daemon=True)
               for s, b in ((proc.stdout, out), (proc.stderr, err))]  # fmt: skip
    for reader in readers:
        reader.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - began
    ended = time.time()
    done.set()
    for reader in readers:
        reader.join()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "wall_s": wall, "launched": launched, "ended": ended, "rc": proc.returncode,
        "stdout": b"".join(out).decode(errors="replace"),
        "stderr": b"".join(err).decode(errors="replace"),
        "peak_mib": max(peak[0], usage.ru_maxrss * 1024) / 2**20,
    }  # fmt: skip


WAIT_TIMEOUT = [120]  # seconds wait-quiet waits at most (--wait-timeout)


def wait_quiet(enabled: bool, timeout: int | None = None) -> str:
    """Run ../shared/tools/wait-quiet (when there is one): "yes", "no" or "-"."""
    if not enabled or not WAIT_QUIET.exists():
        return "-"
    timeout = WAIT_TIMEOUT[0] if timeout is None else timeout
    done = subprocess.run([sys.executable, str(WAIT_QUIET), "--timeout", str(timeout)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    return "yes" if done.returncode == 0 else "no"


def mnistlab_command() -> list[str]:
    """The `mnistlab` console script beside this Python, as a user runs it."""
    script = Path(sys.executable).parent / "mnistlab"
    return [str(script)] if script.exists() else [sys.executable, "-m", "mnistlab"]


def mnist_dir() -> Path:
    home = os.environ.get("MNISTLAB_HOME") or Path.home() / ".mnistlab"
    return Path(home) / "mnist"


# --------------------------------------------------------------------------- the two entries


def run_mnistlab(settings: list[str], work: Path, tag: str) -> dict[str, Any]:
    stamps_file = work / f"phases-{tag}.json"
    env = {**os.environ, "MNISTLAB_PHASES": str(stamps_file)}
    cmd = [*mnistlab_command(), "train", "--recipe", "fast", "--engine", "torch",
           "--out", str(work / f"run-{tag}"), *(f"--set={s}" for s in settings)]  # fmt: skip
    result = run_measured(cmd, env)
    if result["rc"] != 0:
        raise SystemExit(f"mnistlab failed ({result['rc']}):\n{result['stderr']}")
    record = json.loads(stamps_file.read_text())
    s, notes = record["stamps"], record["notes"]
    in_recipe = s["recipe"] - s["setup"]
    data_s, train_s = notes["data_seconds"], notes["train_seconds"]
    metrics = json.loads((work / f"run-{tag}" / "metrics.json").read_text())
    phases = {
        "start-up": s["setup"] - result["launched"] + in_recipe - data_s - train_s,
        "data": data_s + s["test_data"] - s["saved"],
        "training": train_s,
        "evaluation": s["evaluation"] - s["test_data"],
        "writing": s["saved"] - s["recipe"] + s["written"] - s["evaluation"],
        "exit": result["ended"] - s["written"],
    }
    return {"wall_s": result["wall_s"], "phases": phases, "accuracy": metrics["accuracy"],
            "peak_mib": result["peak_mib"]}  # fmt: skip


def run_reference(limit: int | None) -> dict[str, Any]:
    cmd = [sys.executable, str(REFERENCE), str(mnist_dir()), "--json",
           *(["--limit", str(limit)] if limit else [])]  # fmt: skip
    result = run_measured(cmd)
    if result["rc"] != 0:
        raise SystemExit(f"reference script failed ({result['rc']}):\n{result['stderr']}")
    record = json.loads(result["stdout"].strip().splitlines()[-1])
    s = record["stamps"]
    phases = {
        "start-up": s["start"] - result["launched"],
        "data": s["data"] - s["start"],
        "training": s["training"] - s["data"],
        "evaluation": s["evaluation"] - s["training"],
        "writing": 0.0,
        "exit": result["ended"] - s["evaluation"],
    }
    return {"wall_s": result["wall_s"], "phases": phases, "accuracy": record["accuracy"],
            "peak_mib": result["peak_mib"]}  # fmt: skip


# --------------------------------------------------------------------------- driver


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=5, help="timed rounds (default 5)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 6,000 training and 2,000 test images (not comparable)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a recipe setting for the mnistlab command (repeatable)")
    p.add_argument("--json", type=Path, help="also write the results to this file")
    p.add_argument("--no-wait", action="store_true", help="do not run wait-quiet first")
    p.add_argument("--wait-timeout", type=int, default=120,
                   help="seconds wait-quiet waits at most before each run (default 120)")
    args = p.parse_args(argv)
    WAIT_TIMEOUT[0] = args.wait_timeout
    return args


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run the rounds; the results of each entry per round, and whether it was quiet."""
    settings = [*args.set, *(["limit=6000", "test_limit=2000"] if args.quick else [])]
    limit = 6000 if args.quick else None  # the reference script limits both sets alike
    results: dict[str, list[dict[str, Any]]] = {"reference": [], "mnistlab": []}
    with tempfile.TemporaryDirectory(prefix="bench-process-") as tmp:
        work = Path(tmp)
        run_reference(limit)  # warm-up: page cache, mnistlab's decoded cache
        run_mnistlab(settings, work, "warmup")
        for r in range(args.rounds):
            order = ("reference", "mnistlab") if r % 2 == 0 else ("mnistlab", "reference")
            for name in order:
                quiet = wait_quiet(not args.no_wait)
                result = (run_reference(limit) if name == "reference"
                          else run_mnistlab(settings, work, str(r)))  # fmt: skip
                result["quiet"] = quiet
                results[name].append(result)
            ref, ours = results["reference"][-1], results["mnistlab"][-1]
            print(f"round {r + 1}: reference {ref['wall_s']:.2f} s ({_phases(ref)}), "
                  f"acc {ref['accuracy']:.4f}; mnistlab {ours['wall_s']:.2f} s "
                  f"({_phases(ours)}), acc {ours['accuracy']:.4f}; "
                  f"ratio {ours['wall_s'] / ref['wall_s']:.2f} "
                  f"(quiet: {ref['quiet']}/{ours['quiet']})", flush=True)  # fmt: skip
    return results


def _phases(result: dict[str, Any]) -> str:
    return " ".join(f"{name} {result['phases'][name]:.2f}" for name in PHASES)


def report(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> bool:
    from common import print_table

    ref, ours = results["reference"], results["mnistlab"]
    ratios = [o["wall_s"] / r["wall_s"] for o, r in zip(ours, ref, strict=True)]
    ratio = statistics.median(ratios)
    quiet = [x["quiet"] for x in ref + ours]
    quiet_s = f"{sum(q == 'yes' for q in quiet)}/{len(quiet)}"
    quiet_s = "-" if all(q == "-" for q in quiet) else quiet_s
    rows = []
    for name, runs in (("reference", ref), ("mnistlab", ours)):
        rows.append((
            name, f"{statistics.median(x['wall_s'] for x in runs):.2f}",
            *(f"{statistics.median(x['phases'][p] for x in runs):.2f}" for p in PHASES),
            f"{statistics.median(x['accuracy'] for x in runs):.4f}",
            f"{statistics.median(x['peak_mib'] for x in runs):.0f}",
        ))  # fmt: skip
    title = (f"Whole process, fast recipe, {os.cpu_count()} cores, {args.rounds} rounds "
             f"(medians; quiet {quiet_s})" + (" - QUICK" if args.quick else "")
             + "".join(f", {item}" for item in args.set))  # fmt: skip
    print_table(title, rows, ("process", "whole s", *(f"{p} s" for p in PHASES),
                              "test acc", "peak MiB"))  # fmt: skip
    print("reference: benchmarks/reference_fast.py (plain PyTorch); mnistlab: "
          "mnistlab train --recipe fast --engine torch")
    met = ratio <= GOAL
    print(f"mnistlab / reference, whole process: {ratio:.2f} (per round: "
          f"{' '.join(f'{x:.2f}' for x in ratios)}); goal <= {GOAL}: "
          f"{'PASS' if met else 'FAIL'}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"results": results, "ratios": ratios}, indent=2))
    return met


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"cores: os.cpu_count()={os.cpu_count()}; reference reads {mnist_dir()}", flush=True)
    results = measure(args)
    return 0 if report(results, args) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))  # for `common`
    sys.exit(main())
