"""Hostile data: gzip bombs stop at what the header (or the registry) allows, with memory
bounded; stale download temporaries are cleaned; every error is a DataFormatError naming
the file and the position.

Peak memory is measured in a subprocess (VmHWM), so one test's allocations never hide
another's. The bombs are gzip of zeros built here: 512 MiB inflated from ~2.3 MB; before
these readers streamed, each inflated the whole thing (and copied it) before any check.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED_DATASETS
from mnistlab.datasets import fetch
from mnistlab.datasets.idx import encode_idx
from mnistlab.datasets.sources import remove_stale_parts

BOMB_ZEROS = 512 << 20
PEAK_BOUND_MIB = 200

PROBE = textwrap.dedent(
    """
    import json, resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))  # a regression fails, not swaps
    from mnistlab.errors import MnistlabError
    outcome = {"error": None, "message": None}
    try:
        exec(sys.argv[1])
    except MnistlabError as error:
        outcome = {"error": type(error).__name__, "message": str(error)}
    with open("/proc/self/status") as status:
        hwm = next(line for line in status if line.startswith("VmHWM:"))
    outcome["peak_mib"] = int(hwm.split()[1]) / 1024
    print(json.dumps(outcome))
    """
)


def run_probe(code: str, **env: str) -> dict:
    """Run ``code`` in a fresh interpreter; its MnistlabError (if any) and peak RSS in MiB."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout.splitlines()[-1])
    outcome["stderr"] = done.stderr
    return outcome


def write_bomb(path: Path, prefix: bytes, zeros: int = BOMB_ZEROS) -> Path:
    """One gzip member: ``prefix`` then ``zeros`` zero bytes (level 1: fast to build)."""
    packer = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = bytes(1 << 20)
    with open(path, "wb") as handle:
        handle.write(packer.compress(prefix))
        for _ in range(zeros // len(chunk)):
            handle.write(packer.compress(chunk))
        handle.write(packer.flush())
    return path


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bombs")
    labels = gzip.decompress((SHARED_DATASETS / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes())
    return {
        "zeros": write_bomb(root / "zeros.gz", b""),
        # The real test labels (a valid header declaring 10,000 labels), then 512 MiB more.
        "labels": write_bomb(root / "t10k-labels-idx1-ubyte.gz", labels),
    }


def test_bombs_are_small_files(bombs):
    assert all(path.stat().st_size < 4 << 20 for path in bombs.values())


@pytest.mark.parametrize(
    ("bomb", "expected"),
    [
        pytest.param("zeros", r"byte 2: unknown IDX type code", id="zeros"),
        pytest.param("labels", r"byte 10,008: has trailing bytes", id="valid-header-then-zeros"),
    ],
)
def test_read_idx_on_a_gzip_bomb_stops_at_the_header_with_memory_bounded(bombs, bomb, expected):
    outcome = run_probe(f"from mnistlab.datasets import read_idx; read_idx({str(bombs[bomb])!r})")
    assert outcome["error"] == "DataFormatError"
    assert str(bombs[bomb]) in outcome["message"]
    assert re.search(expected, outcome["message"]), outcome["message"]
    assert outcome["peak_mib"] < PEAK_BOUND_MIB


def test_read_idx_refuses_a_declared_size_past_max_bytes_before_reading(tmp_path):
    path = tmp_path / "huge.idx"
    # (1,000,000, 28, 28) uint8 = 784 MB declared, above a 64 MiB limit; zeros would follow.
    path.write_bytes(
        encode_idx(np.zeros((1, 28, 28), np.uint8))[:4]
        + b"".join(n.to_bytes(4, "big") for n in (1_000_000, 28, 28))
    )
    outcome = run_probe(
        f"from mnistlab.datasets import read_idx; read_idx({str(path)!r}, max_bytes=64 << 20)"
    )
    assert outcome["error"] == "DataFormatError"
    assert "byte 4" in outcome["message"] and "784,000,000 bytes" in outcome["message"]


def test_read_csv_on_a_gzip_bomb_stops_at_the_first_line_with_memory_bounded(bombs):
    outcome = run_probe(
        f"from mnistlab.datasets import read_csv; read_csv({str(bombs['zeros'])!r})"
    )
    assert outcome["error"] == "DataFormatError"
    assert str(bombs["zeros"]) in outcome["message"] and "line 1: no line end" in outcome["message"]
    assert outcome["peak_mib"] < PEAK_BOUND_MIB


def test_read_csv_of_valid_rows_stops_at_max_bytes_with_memory_bounded(tmp_path):
    row = (",".join(["0"] * 785) + "\n").encode()
    path = write_bomb(tmp_path / "rows.csv.gz", row * 40_000, zeros=0)  # 63 MB of text
    assert path.stat().st_size < 1 << 20
    outcome = run_probe(
        f"from mnistlab.datasets import read_csv; read_csv({str(path)!r}, max_bytes=16 << 20)"
    )
    assert outcome["error"] == "DataFormatError"
    assert "past 16,777,216 bytes" in outcome["message"]
    assert outcome["peak_mib"] < PEAK_BOUND_MIB


@pytest.mark.parametrize(
    ("key", "filename", "bomb", "expected"),
    [
        # 2.3 MB is within what the 7.8 MB official file may compress to: the download is
        # taken, and verification stops at the official decompressed size.
        pytest.param(
            "test_images",
            "t10k-images-idx3-ubyte.gz",
            "zeros",
            "content goes on past the official 7,840,016 bytes",
            id="inflates-past-the-official-size",
        ),
        # More than the 10 KB labels file can compress to: not even downloaded.
        pytest.param(
            "test_labels",
            "t10k-labels-idx1-ubyte.gz",
            "labels",
            "more than t10k-labels-idx1-ubyte.gz can take",
            id="larger-than-the-file-can-be",
        ),
    ],
)
def test_fetch_with_a_bomb_on_the_first_mirror_uses_the_next_with_memory_bounded(
    bombs, tmp_path, key, filename, bomb, expected
):
    bad = tmp_path / "bad" / "mnist"
    bad.mkdir(parents=True)
    shutil.copyfile(bombs[bomb], bad / filename)
    outcome = run_probe(
        f"""
        from mnistlab.datasets import fetch
        verified = fetch("mnist", {key!r}, progress=False)
        print(verified.origin, file=sys.stderr)
        """,
        MNISTLAB_HOME=str(tmp_path / "home"),
        MNISTLAB_SYSTEM_DIRS="",
        MNISTLAB_MIRRORS=f"{(tmp_path / 'bad').as_uri()},{SHARED_DATASETS.as_uri()}",
    )
    assert outcome["error"] is None
    assert f"bad/mnist/{filename}" in outcome["stderr"] and expected in outcome["stderr"]
    assert outcome["stderr"].strip().endswith(f"shared/datasets/mnist/{filename}")
    assert outcome["peak_mib"] < PEAK_BOUND_MIB
    assert not list((tmp_path / "home" / "mnist").glob("*.part"))


# Leftovers: a fetch killed mid-download leaves its .part; the next fetch removes it.

KILLED_FETCH = """
import os, signal
from mnistlab.datasets import sources

def copy_then_die(source, handle, total, label, progress):
    handle.write(source.read(1 << 20))
    handle.flush()
    os.kill(os.getpid(), signal.SIGKILL)

sources._copy_with_progress = copy_then_die
sources.fetch("mnist", "train_images", progress=False)
"""


def test_a_sigkilled_fetch_leaves_a_part_file_that_the_next_fetch_removes(isolated_home):
    env = {**os.environ, "MNISTLAB_HOME": str(isolated_home)}
    killed = subprocess.Popen([sys.executable, "-c", KILLED_FETCH], env=env)
    assert killed.wait(timeout=60) == -signal.SIGKILL
    leftovers = list((isolated_home / "mnist").glob("*.part"))
    assert len(leftovers) == 1 and f".{killed.pid}." in leftovers[0].name
    assert leftovers[0].stat().st_size == 1 << 20
    fetch("mnist", "test_labels")  # any fetch that takes the lock cleans up
    assert not list((isolated_home / "mnist").glob("*.part"))


def test_a_live_process_part_file_is_kept_and_old_legacy_ones_removed(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".train-images-idx3-ubyte.gz.{sleeper.pid}.abc123.part"
        legacy_old = tmp_path / ".train-images-idx3-ubyte.gz.k2j4x9.part"
        legacy_new = tmp_path / ".t10k-images-idx3-ubyte.gz.q8w7e6.part"
        dead = tmp_path / ".t10k-labels-idx1-ubyte.gz.999999999.zz.part"
        for path in (live, legacy_old, legacy_new, dead):
            path.write_bytes(b"x")
        hour_ago = time.time() - 3600
        os.utime(legacy_old, (hour_ago, hour_ago))
        removed = remove_stale_parts(tmp_path)
        assert sorted(removed) == sorted([legacy_old, dead])
        assert live.exists() and legacy_new.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert remove_stale_parts(tmp_path) == [live]  # its process is gone now
