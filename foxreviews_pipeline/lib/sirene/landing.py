"""The landing zone: one file per daily partition, the records exactly as INSEE sent them.

A partition file is written to a temporary name in the same folder, flushed to disk and
renamed over the final name, so a reader sees the old file or the new one, never half of
one. Downstream assets read it, so they can be re-run without calling INSEE again.

A day read from INSEE goes through `PartitionWriter`: pages are appended to a spool file
beside the partition as they arrive, only each SIRET's latest version is remembered (its
offset in the spool), and `commit` writes the partition from the spool. Memory holds one
page and one small entry per SIRET, never the day.

Beside each partition, `<YYYY-MM-DD>.columns.arrow` holds the same records as the string
columns the mapping reads (`mapping.records_table`), in an Arrow IPC file: the directory
reads it in milliseconds instead of parsing the day's JSON again. It is derived data: it
names the SHA-256 of the partition it was made from, and a reader that finds it missing,
unreadable or made from another file rebuilds it from the partition (`read_columns`).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Self

import orjson
import psutil
import pyarrow as pa

from foxreviews_pipeline.lib.gc_pause import paused_gc
from foxreviews_pipeline.lib.sirene.mapping import FLAT_FIELDS, records_table

FORMAT_VERSION = 1
# The landing zone's folder for SIRENE establishments (`<landing root>/etablissements/`).
RAW_DATASET = "etablissements"
# A partition is `<YYYY-MM-DD>.json.gz`; a file beside it named `<YYYY-MM-DD>.<anything>` is
# one of its sidecars; hidden names are in-flight writes.
PARTITION_SUFFIX = ".json.gz"
# The columnar copy of a partition (module docstring).
COLUMNS_SUFFIX = ".columns.arrow"
_COLUMNS_CHUNK = 5_000  # records decoded at a time while the columns are written
_DATED_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})\.(.+)$")
_DATE_FIELD = "dateDernierTraitementEtablissement"


class LandingError(RuntimeError):
    pass


@dataclass(frozen=True)
class LandedPartition:
    path: Path
    meta: dict[str, Any]
    records: list[dict[str, Any]]


def partition_path(folder: Path, day: date | str) -> Path:
    return folder / f"{day if isinstance(day, str) else day.isoformat()}{PARTITION_SUFFIX}"


@dataclass(frozen=True)
class LandedColumns:
    """A landed partition as `FLAT_FIELDS` string columns, one row per landed record."""

    path: Path
    table: pa.Table


def columns_path(folder: Path, day: date | str) -> Path:
    return folder / f"{day if isinstance(day, str) else day.isoformat()}{COLUMNS_SUFFIX}"


@dataclass(frozen=True)
class LandedName:
    day: date
    is_partition: bool  # the partition itself, else one of its sidecars


def parse_landed_name(name: str) -> LandedName | None:
    """The partition day a landed file belongs to, from its name (None for other names)."""
    match = _DATED_NAME.match(name)
    if not match:
        return None
    try:
        day = date.fromisoformat(match.group(1))
    except ValueError:
        return None
    return LandedName(day, "." + match.group(2) == PARTITION_SUFFIX)


def _encode(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _write_document(
    folder: Path, day: date, meta: dict[str, Any], records: Iterable[bytes]
) -> Path:
    """Stream the partition document (records given already encoded) to a temporary file,
    flush it to disk and rename it over the partition."""
    folder.mkdir(parents=True, exist_ok=True)
    target = partition_path(folder, day)
    # Same bytes as json.dumps of {"format", "partition", "meta", "etablissements"}.
    head = (
        b'{"format":' + _encode(FORMAT_VERSION) + b',"partition":' + _encode(day.isoformat())
        + b',"meta":' + _encode(meta) + b',"etablissements":['
    )
    columns = _ColumnsWriter(folder, day)
    tmp_name: str | None = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "wb") as raw:
            digest = hashlib.sha256()
            # Level 1: 5x smaller than plain JSON at a fraction of level 9's CPU cost.
            with (
                gzip.GzipFile(fileobj=_Hashing(raw, digest), mode="wb", compresslevel=1, mtime=0) as gz,
                io.BufferedWriter(gz, buffer_size=1 << 20) as out,
            ):
                out.write(head)
                for n, record in enumerate(records):
                    if n:
                        out.write(b",")
                    out.write(record)
                    columns.add(record)
                out.write(b"]}")
            raw.flush()
            os.fsync(raw.fileno())
        # The columns first: a crash between the two renames leaves columns that name a
        # partition which is not there, and a reader rebuilds them.
        columns.commit(digest.hexdigest())
        os.replace(tmp_name, target)
        _sync_folder(folder)
    except BaseException:
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)
        columns.discard()
        raise
    return target


def _sync_folder(folder: Path) -> None:
    """Make the renames in `folder` durable."""
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class _Hashing(io.RawIOBase):
    """A write-only file that hashes what it passes on."""

    def __init__(self, raw: io.BufferedWriter, digest: hashlib._Hash) -> None:
        self._raw, self._digest = raw, digest

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._digest.update(data)
        return self._raw.write(data)


def _columns_schema(partition_sha256: str) -> pa.Schema:
    return pa.schema(
        [(name, pa.string()) for name in FLAT_FIELDS],
        metadata={"partition_sha256": partition_sha256, "fields": ",".join(FLAT_FIELDS)},
    )


class _ColumnsWriter:
    """Writes a partition's columns as its records go by, a chunk at a time, to a hidden
    Arrow stream; `commit` turns it into the columns file beside the partition, now that
    the partition's hash is known. Memory holds one chunk, never the day."""

    def __init__(self, folder: Path, day: date) -> None:
        self.target = columns_path(folder, day)
        fd, name = tempfile.mkstemp(prefix=f".{self.target.name}.", suffix=".tmp", dir=folder)
        os.close(fd)
        self.stream = Path(name)
        self._schema = _columns_schema("")
        self._sink = pa.OSFile(name, "wb")
        self._writer = pa.ipc.new_stream(self._sink, self._schema)
        self._pending: list[bytes] = []

    def add(self, record: bytes) -> None:
        self._pending.append(record)
        if len(self._pending) >= _COLUMNS_CHUNK:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            with paused_gc():
                chunk = records_table([orjson.loads(r) for r in self._pending])
            self._writer.write_table(chunk.cast(self._schema))
            self._pending = []

    def commit(self, partition_sha256: str) -> None:
        self._flush()
        self._writer.close()
        self._sink.close()
        schema = _columns_schema(partition_sha256)
        done = self.stream.with_name(self.stream.name + ".arrow")
        try:
            with pa.memory_map(str(self.stream)) as source:
                _write_columns(done, schema, pa.ipc.open_stream(source))
            os.replace(done, self.target)
        finally:
            done.unlink(missing_ok=True)
            self.stream.unlink(missing_ok=True)

    def discard(self) -> None:
        if not self._sink.closed:
            self._sink.close()
        self.stream.unlink(missing_ok=True)


def _write_columns(path: Path, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> None:
    """An Arrow IPC file of `batches` under `schema` (its metadata included), on disk."""
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for batch in batches:
            writer.write_batch(pa.RecordBatch.from_arrays(batch.columns, schema=schema))
    with open(path, "rb+") as written:
        os.fsync(written.fileno())


def write_partition(
    folder: Path, day: date, records: Sequence[dict[str, Any]], meta: dict[str, Any]
) -> Path:
    """Land `records` as they are (no deduplication) as the partition of `day`."""
    return _write_document(folder, day, meta, (_encode(record) for record in records))


class PartitionWriter:
    """Lands a day page by page, keeping the latest version of each SIRET.

        with PartitionWriter(folder, day) as writer:
            for page in pages:
                writer.add(page)
            writer.commit(meta)

    The latest version is the one with the greatest `dateDernierTraitementEtablissement`
    (the last one seen on a tie), and SIRETs keep the order they first appeared in. Leaving the block without `commit` (an error) removes the spool
    and leaves the partition as it was.
    """

    def __init__(self, folder: Path, day: date):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.day = folder, day
        target = partition_path(folder, day)
        # The writer's pid in the name: `remove_stale_spools` knows when it is gone.
        fd, name = tempfile.mkstemp(
            prefix=f".{target.name}.{os.getpid()}.", suffix=SPOOL_SUFFIX, dir=folder
        )
        self.spool_path = Path(name)
        self._spool = os.fdopen(fd, "w+b")
        self._offset = 0
        # siret -> (stamp, offset, length) of its latest version in the spool.
        self._latest: dict[str, tuple[str, int, int]] = {}
        self.received = 0

    @property
    def rows(self) -> int:
        """Distinct SIRETs so far: the rows the partition will hold."""
        return len(self._latest)

    def add(self, records: Iterable[object]) -> None:
        """Spool a page of records as INSEE sent them; one that is not an object with a
        siret is refused."""
        for record in records:
            siret = record.get("siret") if isinstance(record, dict) else None
            if not isinstance(record, dict) or not isinstance(siret, str) or not siret:
                raise LandingError(f"a record of {self.day} has no siret; nothing was landed")
            line = _encode(record)
            self._spool.write(line)
            self._spool.write(b"\n")
            stamp = str(record.get(_DATE_FIELD) or "")
            current = self._latest.get(siret)
            if current is None or stamp >= current[0]:
                self._latest[siret] = (stamp, self._offset, len(line))
            self._offset += len(line) + 1
            self.received += 1
        # What has arrived is on its way to disk, not held in a buffer.
        self._spool.flush()

    def _latest_records(self) -> Iterator[bytes]:
        spool = self._spool
        for _, offset, length in self._latest.values():
            spool.seek(offset)
            yield spool.read(length)

    def commit(self, meta: dict[str, Any]) -> Path:
        """Write the partition (latest version per SIRET) and rename it into place."""
        self._spool.flush()
        try:
            return _write_document(self.folder, self.day, meta, self._latest_records())
        finally:
            self.close()

    def close(self) -> None:
        """Remove the spool (the partition, if committed, stays)."""
        if not self._spool.closed:
            self._spool.close()
        self.spool_path.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_partition(folder: Path, day: date | str) -> LandedPartition:
    path = partition_path(folder, day)
    if not path.exists():
        raise LandingError(
            f"partition {day} has not been landed ({path} is missing): "
            "materialize etablissements_raw for it first"
        )
    try:
        with paused_gc():
            document = orjson.loads(gzip.decompress(path.read_bytes()))
    except (OSError, EOFError, ValueError) as exc:
        raise LandingError(f"{path} is unreadable ({exc}); re-materialize etablissements_raw") from exc
    if document.get("format") != FORMAT_VERSION or document.get("partition") != str(day):
        raise LandingError(f"{path} is not a landed partition of {day}")
    return LandedPartition(path=path, meta=document["meta"], records=document["etablissements"])


def read_columns(folder: Path, day: date | str) -> LandedColumns:
    """A landed partition as columns: its `.columns.arrow` file when that was made from
    this very partition, else the partition's JSON (the columns are then written again)."""
    path = partition_path(folder, day)
    if not path.exists():
        read_partition(folder, day)  # the error that says what to do
    try:
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise LandingError(f"{path} is unreadable ({exc}); re-materialize etablissements_raw") from exc
    expected = _columns_schema(sha)
    try:
        with pa.memory_map(str(columns_path(folder, day))) as source:
            table = pa.ipc.open_file(source).read_all()
        if table.schema.equals(expected, check_metadata=True):
            return LandedColumns(path, table)
    except (OSError, pa.ArrowException):
        pass  # missing or unreadable: rebuilt below
    landed = read_partition(folder, day)
    with paused_gc():
        table = records_table(landed.records).cast(expected)
    target = columns_path(folder, day)
    tmp: Path | None = None
    try:
        # A name of its own: two runs rebuilding the same day never write one file.
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
        os.close(fd)
        tmp = Path(name)
        _write_columns(tmp, expected, table.to_batches())
        os.replace(tmp, target)
    except OSError:
        if tmp is not None:  # a read-only landing zone: the columns serve this run only
            tmp.unlink(missing_ok=True)
    return LandedColumns(path, table)


SPOOL_SUFFIX = ".spool"
# A spool whose writer cannot be told (no pid in its name) is stale after this long: a live
# writer appends a page every few seconds.
STALE_SPOOL_S = 3600


def stale_spools(folder: Path, now: float | None = None) -> list[Path]:
    """Spool files in `folder` whose writer is gone: its pid (in the name) no longer runs on
    this host, or, without a pid, the file has not changed for `STALE_SPOOL_S`."""
    now = time.time() if now is None else now
    found = []
    for path in sorted(folder.glob(f".*{SPOOL_SUFFIX}")) if folder.is_dir() else []:
        parts = path.name.split(".")
        pid = next((int(p) for p in reversed(parts[:-2]) if p.isdigit()), None)
        try:
            old = now - path.stat().st_mtime > STALE_SPOOL_S
        except FileNotFoundError:
            continue
        if (pid is not None and not psutil.pid_exists(pid)) or (pid is None and old):
            found.append(path)
    return found


def remove_stale_spools(folder: Path, say: Callable[[str], None] | None = None) -> list[Path]:
    """Remove the spools of dead writers (a run killed while landing); returns them."""
    removed = []
    for path in stale_spools(folder):
        size = path.stat().st_size if path.exists() else 0
        path.unlink(missing_ok=True)
        removed.append(path)
        if say is not None:
            say(f"removed {path.name} ({size:,} bytes), left by a writer that is gone")
    return removed
