"""Profiles: the digits each person has taught, kept in one SQLite file.

A profile is a name ("default" unless given) and the examples taught under it: the 28x28
image the model saw (after preprocessing), the label the person gave and when. The file
(``$MNISTLAB_HOME/profiles.sqlite`` by default) is in WAL mode, so several server workers
and CLI processes can read and teach at once: each write is one ``BEGIN IMMEDIATE``
transaction, readers never block it, and a call that finds the file busy (another
process writing, or closing the last connection and tidying the WAL, which SQLite answers
with "database is locked" at once) is retried whole for up to ``BUSY_TIMEOUT_S``.
Every change bumps the profile's ``revision``, which is how a process that keeps the
examples' features in memory (``handwriting.adapt``) learns that another one taught.

Bounded, whatever is asked: at most ``MAX_EXAMPLES`` examples a profile (teaching past it
drops that profile's oldest) and ``MAX_PROFILES`` profiles (a new one past it is refused).
A name is 1-64 letters, digits, ``_``, ``.`` or ``-``, starting with a letter or digit;
it is only ever a value in the database, never part of a path.

Export and import use a small safetensors file (images uint8 (n, 28, 28), labels uint8
(n,), created float64 (n,), the name in the metadata), never pickle.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

import numpy as np
import safetensors.numpy
from safetensors import SafetensorError

from mnistlab.atomic import atomic_write_bytes
from mnistlab.datasets.sources import cache_home
from mnistlab.engines.io import open_regular_file, read_header
from mnistlab.errors import MnistlabError, ModelFileError

DEFAULT_PROFILE = "default"
MAX_EXAMPLES = 500
"""Examples kept a profile; teaching more drops the oldest (a person's style drifts; the
newest corrections matter most). 500 keep a prediction's memory lookup well under 1 ms."""
MAX_PROFILES = 1000
"""Profiles in one database; creating one more is refused until one is forgotten."""
MAX_TEACH = 100
"""Examples one teach call may add (a request's worth)."""
BUSY_TIMEOUT_S = 30.0
"""How long a call waits for the database to be free before it gives up with an error."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_SCHEMA_VERSION = 1
_FORMAT = "mnistlab.profile"
_MAX_EXPORT_BYTES = 1 << 22  # MAX_EXAMPLES examples take under 400 KiB


class ProfileError(MnistlabError, ValueError):
    """A bad profile name, label or file, or a profile database that cannot be used."""


class _Busy(ProfileError):
    """SQLite said busy or locked: the whole call is retried (see ``_retry_busy``)."""


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _retry_busy(call: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``call`` again while the database is busy, for up to ``BUSY_TIMEOUT_S``. Safe
    because each call is one transaction (rolled back when it fails) or only reads."""

    @functools.wraps(call)
    def retrying(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        pause = 0.002
        while True:
            try:
                return call(*args, **kwargs)
            except _Busy as busy:
                if time.monotonic() + pause > deadline:
                    raise ProfileError(
                        f"{busy} for over {BUSY_TIMEOUT_S:g} s; another process holds the "
                        "database: try again when it is done"
                    ) from None
                time.sleep(pause)
                pause = min(pause * 2, 0.1)

    return retrying


def _is_busy(error: sqlite3.Error) -> bool:
    """Whether SQLite said busy or locked (its primary code, the low byte; errors the
    sqlite3 module raises itself carry no code)."""
    code = getattr(error, "sqlite_errorcode", 0)
    return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class UnknownProfileError(ProfileError, LookupError):
    """No profile of that name (``teach`` creates one)."""


class ProfileLimitError(ProfileError):
    """The database already holds ``MAX_PROFILES`` profiles."""


@dataclass(frozen=True)
class ProfileInfo:
    """A profile's summary: name, examples (total and per digit), when created and changed."""

    name: str
    examples: int
    per_digit: tuple[int, ...]  # (10,) examples of each digit
    created: float  # seconds since the epoch
    updated: float


@dataclass(frozen=True)
class Examples:
    """A profile's examples, oldest first."""

    ids: np.ndarray  # (n,) int64, unique in the database, increasing with time
    images: np.ndarray  # (n, 28, 28) uint8
    labels: np.ndarray  # (n,) int64
    created: np.ndarray  # (n,) float64

    def __len__(self) -> int:
        return len(self.ids)


def check_name(name: object, field: str = "profile") -> str:
    """``name`` if it is a valid profile name, else a ProfileError saying what is allowed."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        shown = repr(name) if not isinstance(name, str) or len(name) <= 70 else repr(name[:70])
        raise ProfileError(
            f"{field}: {shown} is not a valid profile name (1-64 letters, digits, '_', '.' "
            "or '-', starting with a letter or digit)"
        )
    return name


def check_label(label: object, field: str = "label") -> int:
    """``label`` as an int if it is a digit 0..9 (an int, or a one-digit string)."""
    if isinstance(label, str) and len(label) == 1 and "0" <= label <= "9":  # ASCII only
        return int(label)
    is_int = isinstance(label, (int, np.integer)) and not isinstance(label, (bool, np.bool_))
    if is_int and 0 <= label <= 9:
        return int(label)
    raise ProfileError(f"{field}: must be a digit 0..9, got {label!r}")


def default_db_path() -> Path:
    """Where profiles live unless told otherwise: ``$MNISTLAB_HOME/profiles.sqlite``."""
    return cache_home() / "profiles.sqlite"


class ProfileStore:
    """The profiles of one SQLite file. Safe to share between threads and processes: each
    call opens its own connection (cheap next to a prediction) and writes in one
    transaction."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        max_examples: int = MAX_EXAMPLES,
        max_profiles: int = MAX_PROFILES,
        create: bool = True,
    ) -> None:
        """Open (and with ``create``, make) the database; ``create=False`` for readers that
        must not leave a file behind (``exists`` is then False until someone teaches)."""
        self.path = Path(path) if path is not None else default_db_path()
        self.max_examples = max_examples
        self.max_profiles = max_profiles
        self._created = False
        if create:
            self._create()

    # ------------------------------------------------------------------ reading

    def exists(self) -> bool:
        """Whether the database file is there (a reader treats a missing one as empty)."""
        return self.path.is_file()

    @_retry_busy
    def revision(self, name: str) -> tuple[int, int] | None:
        """(profile id, revision) of ``name``: changes whenever its examples do; None if
        there is no such profile (or no database yet)."""
        if not self.exists():
            return None
        with self._connect() as db:
            row = db.execute(
                "SELECT id, revision FROM profiles WHERE name = ?", (check_name(name),)
            ).fetchone()
        return None if row is None else (int(row[0]), int(row[1]))

    @_retry_busy
    def examples(self, name: str, after_id: int = 0) -> Examples:
        """The examples of ``name`` (those with id > ``after_id``), oldest first;
        UnknownProfileError if there is no such profile."""
        self._must_exist(name)
        with self._connect() as db:
            profile_id = self._profile_id(db, name)
            rows = db.execute(
                "SELECT id, label, image, created FROM examples "
                "WHERE profile_id = ? AND id > ? ORDER BY id",
                (profile_id, after_id),
            ).fetchall()
        return _examples(rows, self.path)

    @_retry_busy
    def example_ids(self, name: str) -> np.ndarray:
        """The ids of ``name``'s examples, oldest first (cheap: no images)."""
        self._must_exist(name)
        with self._connect() as db:
            profile_id = self._profile_id(db, name)
            rows = db.execute(
                "SELECT id FROM examples WHERE profile_id = ? ORDER BY id", (profile_id,)
            ).fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)

    @_retry_busy
    def info(self, name: str) -> ProfileInfo:
        """The summary of one profile; UnknownProfileError if there is none."""
        self._must_exist(name)
        with self._connect() as db:
            row = db.execute(
                "SELECT name, created, updated, id FROM profiles WHERE name = ?",
                (check_name(name),),
            ).fetchone()
            if row is None:
                raise self._unknown(name)
            return self._info(db, row)

    @_retry_busy
    def list(self) -> list[ProfileInfo]:
        """Every profile, by name."""
        if not self.exists():
            return []
        with self._connect() as db:
            rows = db.execute(
                "SELECT name, created, updated, id FROM profiles ORDER BY name"
            ).fetchall()
            return [self._info(db, row) for row in rows]

    # ------------------------------------------------------------------ writing

    @_retry_busy
    def teach(self, name: str, images: np.ndarray, labels: Sequence[int]) -> list[int]:
        """Add examples to ``name`` (created if new) in one transaction; returns their ids.
        An image identical to one already there replaces it (teaching the same picture
        twice keeps one copy, with the newest label). Past ``max_examples`` the profile's
        oldest are dropped."""
        check_name(name)
        images = np.asarray(images)
        if images.ndim == 2:
            images = images[None]
        if images.dtype != np.uint8 or images.shape[1:] != (28, 28):
            raise ProfileError(
                f"images: expected uint8 28x28 images, got {images.dtype} {list(images.shape)}"
            )
        checked = [check_label(label, f"labels[{i}]") for i, label in enumerate(labels)]
        if len(checked) != len(images):
            raise ProfileError(f"{len(images)} images but {len(checked)} labels")
        if not 1 <= len(images) <= MAX_TEACH:
            raise ProfileError(f"teach 1 to {MAX_TEACH} examples at a time, got {len(images)}")
        now = time.time()
        with self._transaction() as db:
            profile_id = self._get_or_create(db, name, now)
            ids = []
            for image, label in zip(images, checked, strict=True):
                pixels = np.ascontiguousarray(image).tobytes()
                db.execute(  # the same picture again: the newest label stands
                    "DELETE FROM examples WHERE profile_id = ? AND image = ?", (profile_id, pixels)
                )
                cursor = db.execute(
                    "INSERT INTO examples (profile_id, label, image, created) VALUES (?, ?, ?, ?)",
                    (profile_id, label, pixels, now),
                )
                ids.append(int(cursor.lastrowid))
            db.execute(
                "DELETE FROM examples WHERE profile_id = ? AND id NOT IN (SELECT id FROM "
                "examples WHERE profile_id = ? ORDER BY id DESC LIMIT ?)",
                (profile_id, profile_id, self.max_examples),
            )
            self._touch(db, profile_id, now)
        return ids[-self.max_examples :]

    @_retry_busy
    def forget(self, name: str) -> int:
        """Delete a profile and its examples; returns how many examples it had."""
        self._must_exist(name)
        with self._transaction() as db:
            profile_id = self._profile_id(db, name)
            (count,) = db.execute(
                "SELECT COUNT(*) FROM examples WHERE profile_id = ?", (profile_id,)
            ).fetchone()
            db.execute("DELETE FROM examples WHERE profile_id = ?", (profile_id,))
            db.execute("DELETE FROM profiles WHERE id = ?", (profile_id,))
        return int(count)

    def export(self, name: str, path: str | os.PathLike[str]) -> ProfileInfo:
        """Write ``name``'s examples to a safetensors file (atomically)."""
        info = self.info(name)
        found = self.examples(name)
        tensors = {
            "images": found.images,
            "labels": found.labels.astype(np.uint8),
            "created": found.created,
        }
        metadata = {"format": _FORMAT, "version": str(_SCHEMA_VERSION), "name": name}
        atomic_write_bytes(path, safetensors.numpy.save(tensors, metadata=metadata))
        return info

    @_retry_busy
    def import_file(
        self, path: str | os.PathLike[str], name: str | None = None, *, replace: bool = False
    ) -> ProfileInfo:
        """Read an exported profile into ``name`` (default: the name in the file). An
        existing profile of that name is refused unless ``replace``, which swaps its
        examples for the file's in one transaction."""
        file_name, images, labels, created = read_profile_file(path)
        target = check_name(name if name is not None else file_name)
        now = time.time()
        with self._transaction() as db:
            row = db.execute("SELECT id FROM profiles WHERE name = ?", (target,)).fetchone()
            if row is not None and not replace:
                raise ProfileError(
                    f"profile {target!r} already exists; pass replace (--replace) to swap its "
                    "examples for the file's, or import under another name"
                )
            profile_id = self._get_or_create(db, target, now)
            db.execute("DELETE FROM examples WHERE profile_id = ?", (profile_id,))
            keep = slice(max(0, len(images) - self.max_examples), None)
            db.executemany(
                "INSERT INTO examples (profile_id, label, image, created) VALUES (?, ?, ?, ?)",
                [
                    (profile_id, int(label), image.tobytes(), float(when))
                    for image, label, when in zip(
                        images[keep], labels[keep], created[keep], strict=True
                    )
                ],
            )
            self._touch(db, profile_id, now)
        return self.info(target)

    # ---------------------------------------------------------------- internals

    @_retry_busy
    def _create(self) -> None:
        """Make the file and its tables if they are not there, in WAL mode; refuse a file
        that is some other database. Two processes creating at once queue on the lock."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._transaction(mode="rwc") as db:
            (version,) = db.execute("PRAGMA user_version").fetchone()
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
            if version == 0 and not tables - {"sqlite_sequence"}:
                for statement in _SCHEMA:
                    db.execute(statement)
            elif version != _SCHEMA_VERSION or not {"profiles", "examples"} <= tables:
                raise ProfileError(
                    f"{self.path}: not a mnistlab profile database (schema version {version}); "
                    "choose another file with --db"
                )
        with self._connect() as db:  # WAL persists in the file; readers then never block
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                db.execute("PRAGMA journal_mode=WAL")  # a no-op where the disk cannot
        self._created = True

    @contextlib.contextmanager
    def _connect(self, mode: str = "rw") -> Iterator[sqlite3.Connection]:
        """A connection for one call (autocommit; foreign keys on), closed afterwards;
        SQLite's errors become one ProfileError naming the file (``_Busy`` when it is only
        busy, for ``_retry_busy`` to try again). Only ``_create`` makes the
        file (``mode="rwc"``): a reader never leaves an empty database behind."""
        if mode == "rw" and not self.exists():
            raise ProfileError(f"{self.path}: no profile database here (teaching creates one)")
        try:
            uri = f"{self.path.resolve().as_uri()}?mode={mode}"
            db = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as error:
            raise ProfileError(f"{self.path}: cannot open the profile database ({error})") from None
        try:
            db.execute("PRAGMA foreign_keys=ON")
            yield db
        except sqlite3.DatabaseError as error:
            kind = _Busy if _is_busy(error) else ProfileError
            raise kind(f"{self.path}: profile database error ({error})") from None
        finally:
            db.close()

    @contextlib.contextmanager
    def _transaction(self, mode: str = "rw") -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once (BEGIN IMMEDIATE) so that two writers queue
        on the lock instead of failing to upgrade; rolled back on any error."""
        if mode == "rw" and not self._created:
            self._create()
        with self._connect(mode) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _profile_id(self, db: sqlite3.Connection, name: str) -> int:
        row = db.execute("SELECT id FROM profiles WHERE name = ?", (check_name(name),)).fetchone()
        if row is None:
            raise self._unknown(name)
        return int(row[0])

    def _must_exist(self, name: str) -> None:
        """UnknownProfileError for ``name`` when there is no database at all."""
        if not self.exists():
            raise self._unknown(check_name(name))

    def _unknown(self, name: str) -> UnknownProfileError:
        return UnknownProfileError(
            f"profile {name!r}: no such profile in {self.path} (teaching creates one; "
            "`mnistlab profiles list` shows them)"
        )

    def _get_or_create(self, db: sqlite3.Connection, name: str, now: float) -> int:
        row = db.execute("SELECT id FROM profiles WHERE name = ?", (name,)).fetchone()
        if row is not None:
            return int(row[0])
        (count,) = db.execute("SELECT COUNT(*) FROM profiles").fetchone()
        if count >= self.max_profiles:
            raise ProfileLimitError(
                f"{self.path}: already holds {count} profiles, the most allowed "
                f"({self.max_profiles}); forget one before creating {name!r}"
            )
        cursor = db.execute(
            "INSERT INTO profiles (name, created, updated, revision) VALUES (?, ?, ?, 0)",
            (name, now, now),
        )
        return int(cursor.lastrowid)

    @staticmethod
    def _touch(db: sqlite3.Connection, profile_id: int, now: float) -> None:
        db.execute(
            "UPDATE profiles SET updated = ?, revision = revision + 1 WHERE id = ?",
            (now, profile_id),
        )

    @staticmethod
    def _info(db: sqlite3.Connection, row: tuple) -> ProfileInfo:
        name, created, updated, profile_id = row
        per_digit = [0] * 10
        for label, count in db.execute(
            "SELECT label, COUNT(*) FROM examples WHERE profile_id = ? GROUP BY label",
            (profile_id,),
        ):
            per_digit[int(label)] = int(count)
        return ProfileInfo(name, sum(per_digit), tuple(per_digit), float(created), float(updated))


_SCHEMA = (
    """CREATE TABLE profiles (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created REAL NOT NULL,
        updated REAL NOT NULL,
        revision INTEGER NOT NULL
    )""",
    """CREATE TABLE examples (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        profile_id INTEGER NOT NULL REFERENCES profiles(id) ON DELETE CASCADE,
        label INTEGER NOT NULL CHECK (label BETWEEN 0 AND 9),
        image BLOB NOT NULL CHECK (length(image) = 784),
        created REAL NOT NULL
    )""",
    "CREATE INDEX examples_by_profile ON examples (profile_id, id)",
    f"PRAGMA user_version = {_SCHEMA_VERSION}",
)


def _examples(rows: list[tuple], path: Path) -> Examples:
    """Rows (id, label, image, created) as arrays, each row checked (a database edited by
    hand must not feed the model a wrong-sized image or a label out of range)."""
    images = np.empty((len(rows), 28, 28), dtype=np.uint8)
    for k, (example_id, label, image, _) in enumerate(rows):
        if not isinstance(image, bytes) or len(image) != 784 or label not in range(10):
            raise ProfileError(
                f"{path}: example {example_id} is damaged (an image of 784 bytes and a label "
                "0..9 expected); forget the profile or restore the file"
            )
        images[k] = np.frombuffer(image, dtype=np.uint8).reshape(28, 28)
    return Examples(
        ids=np.array([r[0] for r in rows], dtype=np.int64),
        images=images,
        labels=np.array([r[1] for r in rows], dtype=np.int64),
        created=np.array([r[3] for r in rows], dtype=np.float64),
    )


def read_profile_file(
    path: str | os.PathLike[str],
) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """(name, images, labels, created) of an exported profile, every part checked before use:
    a regular file of at most 4 MiB, a safetensors header naming the format, exactly the
    three tensors with their dtypes and shapes, labels 0..9, at most MAX_EXAMPLES rows."""
    where = Path(path)
    try:
        handle, size = open_regular_file(where, _MAX_EXPORT_BYTES, "profile file")
        with handle:
            data = handle.read(size)
        header, _ = read_header(io.BytesIO(data), len(data), where)
    except ModelFileError as error:
        raise ProfileError(str(error)) from None
    metadata = header.get("__metadata__")
    if not isinstance(metadata, dict) or metadata.get("format") != _FORMAT:
        raise ProfileError(f"{where}: not a mnistlab profile file (metadata format != {_FORMAT!r})")
    if metadata.get("version") != str(_SCHEMA_VERSION):
        raise ProfileError(f"{where}: profile file version {metadata.get('version')!r} is not "
                           f"supported (this mnistlab reads version {_SCHEMA_VERSION})")
    name = check_name(metadata.get("name"), f"{where}: name")
    want = {"images": "U8", "labels": "U8", "created": "F64"}
    entries = {k: v for k, v in header.items() if k != "__metadata__"}
    if set(entries) != set(want):
        raise ProfileError(f"{where}: expected the tensors {sorted(want)}, got {sorted(entries)}")
    for key, dtype in want.items():
        entry = entries[key]
        if not isinstance(entry, dict) or entry.get("dtype") != dtype:
            raise ProfileError(f"{where}: tensor {key!r} must be {dtype}")
    shape = entries["images"].get("shape")
    if not (isinstance(shape, list) and len(shape) == 3 and shape[1:] == [28, 28]):
        raise ProfileError(f"{where}: images must have shape (n, 28, 28), got {shape}")
    n = shape[0]
    if not isinstance(n, int) or not 0 <= n <= MAX_EXAMPLES:
        raise ProfileError(f"{where}: {n} examples; a profile holds at most {MAX_EXAMPLES}")
    for key in ("labels", "created"):
        if entries[key].get("shape") != [n]:
            raise ProfileError(f"{where}: {key} must have shape ({n},), one per image")
    try:
        tensors = safetensors.numpy.load(data)
    except (SafetensorError, ValueError) as error:
        raise ProfileError(f"{where}: unreadable safetensors data ({error})") from None
    labels = tensors["labels"].astype(np.int64)
    bad = np.flatnonzero(labels > 9)
    if bad.size:
        raise ProfileError(f"{where}: labels[{bad[0]}] is {labels[bad[0]]}, not a digit 0..9")
    created = tensors["created"]
    if not np.all(np.isfinite(created)):
        raise ProfileError(f"{where}: created must hold finite times")
    return name, tensors["images"], labels, created
