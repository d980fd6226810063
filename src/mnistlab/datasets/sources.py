"""Where dataset files come from: the cache, Debian's data directory, then mirrors.

Download discipline (as pooch does it): stream into a temp file inside the cache directory,
verify the checksum of the decompressed content, then rename into place. A file lock makes
two processes fetching at once take turns, so nothing is written twice or half-written.

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
import json
import os
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mnistlab.atomic import atomic_write_text, default_file_mode
from mnistlab.datasets.idx import decompress
from mnistlab.datasets.registry import DataFile, Dataset, get_dataset
from mnistlab.errors import ChecksumError, DataFormatError, DatasetNotFoundError

try:  # POSIX advisory locks; elsewhere the atomic rename alone keeps files whole.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

DEFAULT_SYSTEM_DIRS = ("/usr/share/datasets",)
DOWNLOAD_TIMEOUT_S = 60
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class VerifiedFile:
    """A dataset file whose decompressed content matched its checksum."""

    path: Path
    origin: str  # "cache", a system directory path, or the URL it was downloaded from
    content: bytes  # decompressed IDX bytes


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


def verify_content(raw: bytes, spec: DataFile, source: str) -> bytes:
    """Decompress ``raw`` and check its MD5 against the registry; return the content."""
    content = decompress(raw, source)
    digest = hashlib.md5(content, usedforsecurity=False).hexdigest()
    if digest != spec.md5:
        raise ChecksumError(
            f"{source}: checksum mismatch: decompressed content has MD5 {digest}, "
            f"expected {spec.md5} (corrupt, truncated or a different file)"
        )
    return content


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
    with _file_lock(cache_dir / ".fetch.lock"):
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
        content = verify_content(path.read_bytes(), spec, str(path))
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
            return VerifiedFile(path, str(path), verify_content(path.read_bytes(), spec, str(path)))
        except (OSError, DataFormatError) as error:
            attempts.append(f"{path}: {_describe(error)}")
    return None


def _download(
    url: str, dataset: Dataset, spec: DataFile, cache_dir: Path, progress: bool | None
) -> VerifiedFile:
    """Stream ``url`` into a temp file in the cache, verify it, and move it into place."""
    target = cache_dir / spec.filename
    fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.filename}.", suffix=".part", dir=cache_dir)
    try:
        os.fchmod(fd, default_file_mode())
        with (
            os.fdopen(fd, "wb") as handle,
            urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response,
        ):
            total = int(response.headers.get("Content-Length") or 0) or None
            _copy_with_progress(
                response, handle, total, f"{dataset.name}/{spec.filename}", progress
            )
            handle.flush()
            os.fsync(handle.fileno())
        content = verify_content(Path(tmp_name).read_bytes(), spec, url)
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
