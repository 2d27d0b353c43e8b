"""Parquet shard I/O: atomic zstd shards with a manifest, a streaming reader and resume keys.

A shard becomes visible only by ``os.replace`` of a fully written, fsynced temp file, so a run
killed at any moment leaves either a whole shard or none. SIGTERM and SIGINT are held back while
a shard and its manifest are written, so a stopped run never loses or repeats a buffered row.
Parallel writers into one directory (``--num-shards N --shard-index i``) use distinct tags, so
their names, temp files and manifests never collide; a second run of the same tag is refused by
``stepprune.runlock.RunLock``. Readers stream record batches and check every file's schema name
and version.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from stepprune.schema import (
    Schema,
    check_file_schema,
    check_nulls,
    open_parquet,
    to_table,
    upcast,
)

log = logging.getLogger(__name__)

SHARD_GLOB = "*.parquet"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _naming(path: Path):
    """Give an OSError that names no file (pyarrow's, a failed write's) the name ``path``, so a
    full disk is one line that says where: "[Errno 28] No space left on device: 'out/part-..'"."""
    try:
        yield
    except OSError as e:
        if e.filename is not None or e.errno is None:
            raise
        raise OSError(e.errno, os.strerror(e.errno), str(path)) from e


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    try:
        with _naming(path), open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


@contextlib.contextmanager
def signals_deferred():
    """Hold SIGTERM and SIGINT back until the block ends, so that a handler that raises can
    never cut a shard write from its bookkeeping. Recording handlers stand in for the block
    (the kernel may deliver a signal to any thread, so a thread mask would not do); the
    original handler then runs for each signal that came."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    held = (signal.SIGTERM, signal.SIGINT)
    old = {s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in held}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        for s in caught:
            handler = old[s]
            if callable(handler):
                handler(s, None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(s)


def count_rows(out_dir: str | Path) -> int:
    """Rows in the visible shards of ``out_dir`` (from Parquet footers; 0 if none)."""
    path = Path(out_dir)
    if not path.is_dir():
        return 0
    return sum(pq.read_metadata(f).num_rows for f in shard_files(path))


def write_table_atomic(
    table: pa.Table, path: Path, tmp_tag: str = "", compression: str = "zstd"
) -> None:
    """Write ``table`` to ``path`` so that ``path`` never exists half-written."""
    tmp = path.with_name(f".tmp-{tmp_tag}{uuid.uuid4().hex}.parquet")
    try:
        with _naming(path):
            pq.write_table(table, tmp, compression=compression)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


class ShardWriter:
    """Buffers validated rows and writes them as numbered shards ``{prefix}-{tag}-{seq}.parquet``.

    ``write`` rotates whenever ``rows_per_shard`` rows are buffered; ``flush`` writes whatever is
    buffered (stages call it after each batch once ``flush_seconds`` have passed, bounding the
    work a kill can lose). The manifest lists this writer's shards with their row counts.
    """

    def __init__(
        self,
        out_dir: str | Path,
        schema: Schema,
        *,
        rows_per_shard: int = 1000,
        tag: str = "00000",
        prefix: str = "part",
        flush_seconds: float = 60.0,
    ) -> None:
        if rows_per_shard < 1:
            raise ValueError("rows_per_shard must be >= 1")
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.schema, self.rows_per_shard, self.tag = schema, rows_per_shard, tag
        self.prefix, self.flush_seconds = prefix, flush_seconds
        self.manifest_path = self.dir / f"manifest-{tag}.json"
        self._buffer: list[dict] = []
        self._last_flush = time.monotonic()
        self._clean_temp_files()
        self._pattern = re.compile(rf"^{re.escape(prefix)}-{re.escape(tag)}-(\d+)\.parquet$")
        self._seq = 1 + max(
            (int(m.group(1)) for p in self.dir.iterdir() if (m := self._pattern.match(p.name))),
            default=-1,
        )
        self.rows_written = 0

    def _clean_temp_files(self) -> None:
        for p in self.dir.glob(f".tmp-{self.tag}-*"):
            log.info("removing temp file %s left by a killed run", p)
            p.unlink(missing_ok=True)

    def write(self, rows: Iterable[dict]) -> None:
        self._buffer.extend(rows)
        while len(self._buffer) >= self.rows_per_shard:
            with signals_deferred():
                self._write_shard(self._buffer[: self.rows_per_shard])
                self._buffer = self._buffer[self.rows_per_shard :]

    def maybe_flush(self) -> None:
        if self._buffer and time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        with signals_deferred():
            if self._buffer:
                self._write_shard(self._buffer)
                self._buffer = []

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        # On an exception (SIGTERM, Ctrl-C, a failed batch) keep what was buffered: those rows
        # are complete; a failure to write them must not hide the first error. It is one line,
        # and none at all when it is the first error again (a full disk): no second traceback.
        rows = len(self._buffer)
        try:
            self.close()
        except Exception as e:
            if not (isinstance(e, OSError) and isinstance(exc, OSError) and e.errno == exc.errno):
                log.warning("%d buffered rows not written after %s: %s", rows, exc_type.__name__, e)

    def _write_shard(self, rows: list[dict]) -> None:
        path = self.dir / f"{self.prefix}-{self.tag}-{self._seq:05d}.parquet"
        table = to_table(rows, self.schema, origin=str(path))
        write_table_atomic(table, path, tmp_tag=f"{self.tag}-")
        self._seq += 1
        self.rows_written += len(rows)
        self._last_flush = time.monotonic()
        self._update_manifest()
        log.debug("wrote %s (%d rows)", path, len(rows))

    def _update_manifest(self) -> None:
        shards = sorted(p for p in self.dir.iterdir() if self._pattern.match(p.name))
        entry = {
            "schema": self.schema.name,
            "schema_version": self.schema.version,
            "shards": [{"file": p.name, "rows": pq.read_metadata(p).num_rows} for p in shards],
        }
        entry["rows"] = sum(s["rows"] for s in entry["shards"])
        atomic_write_bytes(self.manifest_path, json.dumps(entry, indent=1).encode())


def shard_files(source: str | Path | Iterable[str | Path]) -> list[Path]:
    """Visible shards of a directory (sorted), or the given files; temp files are never listed."""
    if isinstance(source, str | Path):
        p = Path(source)
        if p.is_dir():
            return sorted(f for f in p.glob(SHARD_GLOB) if not f.name.startswith("."))
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such file or directory")
        return [p]
    return [f for s in source for f in shard_files(s)]


def check_apart(out: str | Path, inputs: Iterable[str | Path]) -> None:
    """Refuse an output directory that is, or holds, one of the inputs: replacing the output
    (``overwrite``) would delete the data it is made from."""
    target = Path(out).resolve()
    for item in inputs:
        path = Path(item).resolve()
        if path == target or target in path.parents:
            raise ValueError(f"--out {out} holds the input {item}; write to another directory")


@contextlib.contextmanager
def removed_if_left_empty(out: str | Path):
    """An output directory this block creates is removed again if the block fails leaving it
    empty (a refusal, a model that does not load): no bare ``--out`` is left behind."""
    path = Path(out)
    existed = path.exists()
    try:
        yield
    except BaseException:
        if not existed and path.is_dir() and not any(path.iterdir()):
            path.rmdir()
        raise


def iter_batches(
    source: str | Path | Iterable[str | Path],
    schema: Schema,
    columns: list[str] | None = None,
    batch_size: int = 1024,
) -> Iterator[tuple[Path, pa.RecordBatch]]:
    """Stream (file, record batch) pairs, checking each file's schema before reading it; the
    batches of an older version it reads come cast up to the current one."""
    for path in shard_files(source):
        pf = open_parquet(path)
        check_file_schema(pf.schema_arrow, schema, path)
        start = 0
        for batch in pf.iter_batches(batch_size=batch_size, columns=columns):
            check_nulls(pa.Table.from_batches([batch]), schema, str(path), start)
            start += batch.num_rows
            yield path, upcast(batch, schema, str(path))


def read_table(source, schema: Schema, columns: list[str] | None = None) -> pa.Table:
    batches = [b for _, b in iter_batches(source, schema, columns)]
    if not batches:
        fields = schema.arrow if columns is None else [schema.arrow.field(c) for c in columns]
        return pa.schema(fields).empty_table()
    return pa.Table.from_batches(batches)


def existing_keys(out_dir: str | Path, schema: Schema) -> set[tuple]:
    """Keys already written under ``out_dir``: what a resumed stage must not produce again."""
    if not Path(out_dir).is_dir():
        return set()
    keys: set[tuple] = set()
    for _, batch in iter_batches(out_dir, schema, columns=list(schema.key)):
        cols = [batch.column(k).to_pylist() for k in schema.key]
        keys.update(zip(*cols, strict=True))
    return keys
