"""Crash-safe file writes: write a temp file beside the target, fsync, then rename over it.

A reader therefore sees either the old file or the complete new one, never half of one.
A process killed mid-write leaves its temporary behind, named ``.<target>.<pid>.<random>.tmp``
so that ``clean_stale_temporaries`` can tell a dead writer's leftovers from a live one's.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

# .<target>.<pid>.<random>.tmp; before pids were in the names, .<target>.<random>.tmp
_TEMP_WITH_PID = re.compile(r"\.(?P<target>.+)\.(?P<pid>[0-9]{1,10})\.[a-z0-9_]{8}\.tmp")
_TEMP_WITHOUT_PID = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp")
UNOWNED_STALE_SECONDS = 3600  # a temporary naming no pid is stale when this old


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces ``path`` atomically when the block ends without error."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp",
                                    dir=target.parent)
    try:
        os.fchmod(fd, default_file_mode())
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_directory(target.parent)


def default_file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give (mkstemp's own is owner-only)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_writer(path) as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def clean_stale_temporaries(directory: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries ``atomic_writer`` left in ``directory`` when its process died
    (killed mid-write); return the paths removed.

    Only regular files named as ``atomic_writer`` names them are considered. A temporary whose
    process is alive on this machine, this one included, is left alone: its rename is still
    to come. One that names no process (written before names carried the pid) is removed when
    unmodified for ``UNOWNED_STALE_SECONDS``. Errors (a file already gone, no permission) are
    skipped: cleaning is best effort and never fails the caller.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        name = entry.name
        if not (name.startswith(".") and name.endswith(".tmp")):
            continue
        with_pid = _TEMP_WITH_PID.fullmatch(name)
        if not with_pid and not _TEMP_WITHOUT_PID.fullmatch(name):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                continue
            if with_pid:
                if _process_alive(int(with_pid["pid"])):
                    continue
            elif now - st.st_mtime < UNOWNED_STALE_SECONDS:
                continue
            os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists here (another user's counts: it cannot be signalled)."""
    if pid == os.getpid():
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, OSError):
        return False
    return True


def _fsync_directory(directory: Path) -> None:
    """Persist the rename itself (a no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
