"""Where dataset files come from: the cache, Debian's data directory, then mirrors.

Download discipline (as pooch does it): stream into a temp file inside the cache directory,
verify the checksum of the decompressed content, then rename into place. A file lock makes
two processes fetching at once take turns, so nothing is written twice or half-written.

Bounded memory: a download may not exceed what the official file can compress to, and
verification streams the content through MD5 and stops at the official decompressed size
(the registry knows it), so a decompression bomb costs at most that much memory.

Leftovers: a temp file is named ``.<file>.<pid>.<random>.part``. A process killed mid-download
leaves one behind; the next fetch, holding the lock, removes those whose process is gone
(and, from older versions without a pid in the name, those older than ten minutes).

Configuration by environment:
- ``MNISTLAB_HOME``: cache directory (default ``~/.cache/mnistlab``).
- ``MNISTLAB_MIRRORS``: comma-separated base URLs tried before the built-in mirrors; a file is
  looked up at ``<base>/<dataset>/<file name>``. ``file://`` URLs take the same code path as
  ``https://`` ones.
- ``MNISTLAB_SYSTEM_DIRS``: colon-separated directories holding ``<dataset>/<file name>``
  (default ``/usr/share/datasets``, where Debian's dataset packages install).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mnistlab.atomic import atomic_write_text, default_file_mode
from mnistlab.datasets.idx import InputStream
from mnistlab.datasets.registry import DataFile, Dataset, get_dataset
from mnistlab.errors import ChecksumError, DataFormatError, DatasetNotFoundError

try:  # POSIX advisory locks; elsewhere the atomic rename alone keeps files whole.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

DEFAULT_SYSTEM_DIRS = ("/usr/share/datasets",)
DOWNLOAD_TIMEOUT_S = 60
CHUNK_BYTES = 1 << 20
LOCK_NAME = ".fetch.lock"
STALE_LEGACY_S = 600  # a .part without a pid in its name, untouched this long, is abandoned
STALE_LIVE_PID_S = 24 * 3600  # even with a live pid (reused?) a day-old .part is abandoned


@dataclass(frozen=True)
class VerifiedFile:
    """A dataset file whose decompressed content matched its checksum."""

    path: Path
    origin: str  # "cache", a system directory path, or the URL it was downloaded from
    content: bytes | bytearray  # decompressed IDX bytes


def cache_home() -> Path:
    """The cache root: ``$MNISTLAB_HOME`` or ``~/.cache/mnistlab``."""
    configured = os.environ.get("MNISTLAB_HOME")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "mnistlab"


def dataset_cache_dir(dataset: str) -> Path:
    """The cache directory of one dataset."""
    return cache_home() / dataset


def mirror_urls(dataset: Dataset) -> list[str]:
    """Full URLs of each mirror's copy of the dataset, configured mirrors first."""
    configured = [
        f"{base.strip().rstrip('/')}/{dataset.name}"
        for base in os.environ.get("MNISTLAB_MIRRORS", "").split(",")
        if base.strip()
    ]
    return [*configured, *dataset.mirrors]


def system_dirs() -> list[Path]:
    """Directories where system packages install datasets (``$MNISTLAB_SYSTEM_DIRS``)."""
    configured = os.environ.get("MNISTLAB_SYSTEM_DIRS")
    entries = configured.split(":") if configured is not None else DEFAULT_SYSTEM_DIRS
    return [Path(entry) for entry in entries if entry]


def max_download_bytes(spec: DataFile) -> int:
    """The most a mirror may send for ``spec``: its raw size plus deflate's worst-case growth."""
    return spec.size + spec.size // 64 + (1 << 16)


def verify_stream(stream: InputStream, spec: DataFile) -> bytearray:
    """Stream the content through MD5, never past the official size; return it if it matches."""
    content = bytearray(spec.size)
    view = memoryview(content)
    digest = hashlib.md5(usedforsecurity=False)
    filled = 0
    while filled < spec.size:
        got = stream.readinto(view[filled : filled + CHUNK_BYTES])
        if not got:
            break
        digest.update(view[filled : filled + got])
        filled += got
    source = stream.source
    if filled < spec.size:
        raise ChecksumError(
            f"{source}: byte {filled:,}: content ends there, the official {spec.filename} has "
            f"{spec.size:,} bytes (truncated or a different file)"
        )
    if not stream.at_end():
        raise ChecksumError(
            f"{source}: byte {spec.size:,}: content goes on past the official {spec.size:,} "
            f"bytes of {spec.filename} (a different file or a decompression bomb); stopped there"
        )
    if digest.hexdigest() != spec.md5:
        raise ChecksumError(
            f"{source}: checksum mismatch: decompressed content has MD5 {digest.hexdigest()}, "
            f"expected {spec.md5} (corrupt, truncated or a different file)"
        )
    return content


def verify_file(path: str | os.PathLike[str], spec: DataFile, source: str) -> bytearray:
    """Decompress the file at ``path`` (streaming) and check it against the registry."""
    with InputStream.open(path, source, max_bytes=spec.size) as stream:
        return verify_stream(stream, spec)


def verify_content(raw: bytes, spec: DataFile, source: str) -> bytearray:
    """Decompress ``raw`` and check its size and MD5 against the registry; return the content."""
    return verify_stream(InputStream(io.BytesIO(raw), source, max_bytes=spec.size), spec)


def fetch(dataset_name: str, key: str, *, progress: bool | None = None) -> VerifiedFile:
    """Return a verified copy of one dataset file, downloading it into the cache if needed."""
    dataset = get_dataset(dataset_name)
    spec = dataset.files[key]
    attempts: list[str] = []

    found = _from_cache(dataset, spec, attempts) or _from_system_dirs(dataset, spec, attempts)
    if found:
        return found
    cache_dir = dataset_cache_dir(dataset.name)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _file_lock(cache_dir / LOCK_NAME):
        remove_stale_parts(cache_dir)
        # Another process may have fetched the file while we waited for the lock.
        found = _from_cache(dataset, spec, attempts)
        if found:
            return found
        for base in mirror_urls(dataset):
            url = f"{base}/{spec.filename}"
            try:
                return _download(url, dataset, spec, cache_dir, progress)
            except (OSError, urllib.error.URLError, DataFormatError, ValueError) as error:
                attempts.append(f"{url}: {_describe(error)}")
                print(
                    f"mnistlab: {url}: {_describe(error)}; trying the next source", file=sys.stderr
                )
    raise DatasetNotFoundError(_not_found_message(dataset, spec, attempts))


def fetch_all(dataset_name: str, *, progress: bool | None = None) -> dict[str, VerifiedFile]:
    """Fetch and verify every file of a dataset."""
    dataset = get_dataset(dataset_name)
    return {key: fetch(dataset.name, key, progress=progress) for key in dataset.files}


def recorded_origins(dataset_name: str) -> dict[str, str]:
    """Where each cached file was downloaded from (recorded at download time)."""
    path = dataset_cache_dir(dataset_name) / "origins.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _from_cache(dataset: Dataset, spec: DataFile, attempts: list[str]) -> VerifiedFile | None:
    path = dataset_cache_dir(dataset.name) / spec.filename
    if not path.exists():
        return None
    try:
        content = verify_file(path, spec, str(path))
    except (OSError, DataFormatError) as error:
        # A damaged cache entry is removed so that the next source can replace it.
        attempts.append(f"{path}: {_describe(error)} (removed)")
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return None
    return VerifiedFile(path, recorded_origins(dataset.name).get(spec.filename, "cache"), content)


def _from_system_dirs(dataset: Dataset, spec: DataFile, attempts: list[str]) -> VerifiedFile | None:
    for directory in system_dirs():
        path = directory / dataset.name / spec.filename
        if not path.exists():
            continue
        try:
            return VerifiedFile(path, str(path), verify_file(path, spec, str(path)))
        except (OSError, DataFormatError) as error:
            attempts.append(f"{path}: {_describe(error)}")
    return None


def _download(
    url: str, dataset: Dataset, spec: DataFile, cache_dir: Path, progress: bool | None
) -> VerifiedFile:
    """Stream ``url`` into a temp file in the cache, verify it, and move it into place."""
    target = cache_dir / spec.filename
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{spec.filename}.{os.getpid()}.", suffix=".part", dir=cache_dir
    )
    try:
        os.fchmod(fd, default_file_mode())
        with (
            os.fdopen(fd, "wb") as handle,
            urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response,
        ):
            total = int(response.headers.get("Content-Length") or 0) or None
            limit = max_download_bytes(spec)
            if total is not None and total > limit:
                raise DataFormatError(
                    f"{url}: {total:,} bytes offered, more than {spec.filename} can take "
                    f"({limit:,}); not downloaded"
                )
            _copy_with_progress(
                _Capped(response, limit, url),
                handle,
                total,
                f"{dataset.name}/{spec.filename}",
                progress,
            )
            handle.flush()
            os.fsync(handle.fileno())
        content = verify_file(tmp_name, spec, url)
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    origins = recorded_origins(dataset.name) | {spec.filename: url}
    atomic_write_text(cache_dir / "origins.json", json.dumps(origins, indent=2, sort_keys=True))
    return VerifiedFile(target, url, content)


def _copy_with_progress(
    source, handle, total: int | None, label: str, progress: bool | None
) -> None:
    show = sys.stderr.isatty() if progress is None else progress
    if not show:
        while chunk := source.read(CHUNK_BYTES):
            handle.write(chunk)
        return
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    with Progress(
        *Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(), transient=True
    ) as bar:
        task = bar.add_task(f"downloading {label}", total=total)
        while chunk := source.read(CHUNK_BYTES):
            handle.write(chunk)
            bar.advance(task, len(chunk))


class _Capped:
    """A response that refuses to deliver more than ``limit`` bytes."""

    def __init__(self, response, limit: int, url: str):
        self._response, self._left, self._limit, self._url = response, limit, limit, url

    def read(self, size: int) -> bytes:
        chunk = self._response.read(min(size, self._left + 1))
        self._left -= len(chunk)
        if self._left < 0:
            raise DataFormatError(
                f"{self._url}: more than {self._limit:,} bytes sent, more than the file can "
                "take; stopped there"
            )
        return chunk


def remove_stale_parts(cache_dir: Path, now: float | None = None) -> list[Path]:
    """Remove ``.part`` files that no live download owns; call with the fetch lock held.

    Only a process holding the lock writes ``.part`` files, so with it held none is being
    written by mnistlab on this machine; the pid in the name still guards a cache shared
    with another machine or an unlocking tool: a live pid's file is kept for a day.
    """
    if fcntl is None:  # pragma: no cover - no lock (and no signal-0 probe) on Windows
        return []
    now = time.time() if now is None else now
    removed = []
    for path in cache_dir.glob(".*.part"):
        try:
            age = now - path.stat().st_mtime
        except FileNotFoundError:
            continue
        pid = _part_pid(path.name)
        if pid is None:
            stale = age > STALE_LEGACY_S
        else:
            stale = not _pid_alive(pid) or pid == os.getpid() or age > STALE_LIVE_PID_S
        if stale:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


def _part_pid(name: str) -> int | None:
    """The pid in ``.<file>.<pid>.<random>.part``, or None for another name."""
    parts = name[1 : -len(".part")].rsplit(".", 2)
    if len(parts) == 3 and parts[1].isdigit():
        return int(parts[1])
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _describe(error: BaseException) -> str:
    if isinstance(error, urllib.error.URLError) and not isinstance(error, urllib.error.HTTPError):
        return f"unreachable ({error.reason})"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error)


def _not_found_message(dataset: Dataset, spec: DataFile, attempts: list[str]) -> str:
    tried = "\n".join(f"  - {line}" for line in attempts) or "  - (nothing)"
    searched = ", ".join(str(d / dataset.name) for d in system_dirs()) or "(none)"
    return (
        f"could not obtain {dataset.name}/{spec.filename}.\nTried, in order:\n"
        f"  - cache {dataset_cache_dir(dataset.name)}: not present\n"
        f"  - system directories: {searched}\n{tried}\n"
        "To use local files, put the official .gz files in a directory DIR/"
        f"{dataset.name}/ and set MNISTLAB_MIRRORS=file:///abs/path/to/DIR "
        "(or set MNISTLAB_HOME to a cache that already holds them)."
    )
