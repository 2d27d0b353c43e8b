"""Schema and shard I/O: validation, version checks, atomic writes, resume keys."""

import json
import os
import subprocess
import sys
import textwrap

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stepprune.schema import GENERATIONS, Schema, SchemaError, to_table, validate_rows
from stepprune.shards import ShardWriter, existing_keys, iter_batches, read_table, shard_files

TOY = Schema(
    name="toy",
    version=2,
    key=("id",),
    arrow=pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("x", pa.list_(pa.float32()), nullable=False),
            pa.field("note", pa.string(), nullable=True),
        ]
    ),
)


def rows(n, start=0):
    return [{"id": f"r{i}", "x": [float(i), 0.5]} for i in range(start, start + n)]


def test_missing_required_column_is_an_error():
    with pytest.raises(SchemaError, match=r"row 1: column 'x' is missing"):
        validate_rows([{"id": "a", "x": [1.0]}, {"id": "b"}], TOY, "f.parquet")


def test_null_unknown_and_nan_are_errors():
    with pytest.raises(SchemaError, match="column 'id' is missing or null"):
        validate_rows([{"id": None, "x": []}], TOY)
    with pytest.raises(SchemaError, match="unknown columns"):
        validate_rows([{"id": "a", "x": [], "y": 1}], TOY)
    with pytest.raises(SchemaError, match="row 0: column 'x' holds NaN"):
        validate_rows([{"id": "a", "x": [float("nan")]}], TOY)


def test_generations_schema_required_columns_cover_provenance():
    req = set(GENERATIONS.required)
    assert {"entropy_source", "model", "backend", "sampling", "versions", "steps"} <= req
    assert "token_entropy_lower" not in req  # null for exact entropies


def test_writer_rotates_and_keeps_manifest(tmp_path):
    with ShardWriter(tmp_path, TOY, rows_per_shard=4, tag="t") as w:
        w.write(rows(10))
    files = shard_files(tmp_path)
    assert [f.name for f in files] == [
        "part-t-00000.parquet",
        "part-t-00001.parquet",
        "part-t-00002.parquet",
    ]
    assert [pq.read_metadata(f).num_rows for f in files] == [4, 4, 2]
    manifest = json.loads((tmp_path / "manifest-t.json").read_text())
    assert manifest["rows"] == 10 and manifest["schema"] == "toy"
    table = read_table(tmp_path, TOY)
    assert table.column("id").to_pylist() == [f"r{i}" for i in range(10)]
    assert pq.read_metadata(files[0]).metadata[b"stepprune.schema_version"] == b"2"
    assert pq.ParquetFile(files[0]).metadata.row_group(0).column(0).compression == "ZSTD"


def test_second_writer_continues_numbering(tmp_path):
    with ShardWriter(tmp_path, TOY, rows_per_shard=100, tag="t") as w:
        w.write(rows(3))
    with ShardWriter(tmp_path, TOY, rows_per_shard=100, tag="t") as w:
        w.write(rows(2, start=3))
    assert existing_keys(tmp_path, TOY) == {(f"r{i}",) for i in range(5)}
    assert len(shard_files(tmp_path)) == 2


def test_reader_refuses_wrong_version_and_foreign_files(tmp_path):
    older = Schema("toy", 1, TOY.arrow, TOY.key)
    pq.write_table(to_table(rows(2), older), tmp_path / "a.parquet")
    with pytest.raises(SchemaError, match=r"a.parquet: 'toy' schema version 1, .* reads version 2"):
        list(iter_batches(tmp_path, TOY))
    other = tmp_path / "other"
    other.mkdir()
    pq.write_table(pa.table({"id": ["x"]}), other / "b.parquet")
    with pytest.raises(SchemaError, match="b.parquet: not a stepprune file"):
        read_table(other, TOY)
    (other / "b.parquet").write_bytes(b"garbage")
    with pytest.raises(SchemaError, match="not a readable Parquet file"):
        read_table(other, TOY)


def test_reader_casts_older_versions_and_other_widths_up(tmp_path):
    arrow = pa.schema([pa.field("k", pa.float64()), pa.field("n", pa.int32())])
    wide = Schema("wide", 3, arrow, ("k",), reads=(2,))

    def write(name, version, k, n, k_type=pa.float32(), n_type=pa.int64()):
        meta = {b"stepprune.schema": b"wide", b"stepprune.schema_version": str(version).encode()}
        schema = pa.schema([pa.field("k", k_type), pa.field("n", n_type)], metadata=meta)
        pq.write_table(pa.table({"k": k, "n": n}, schema=schema), tmp_path / name)

    write("a.parquet", 2, [0.1, 0.8], [1, 2])  # the older version: float32, int64
    write("b.parquet", 3, [0.3], [3], k_type=pa.float64(), n_type=pa.int32())
    table = read_table(tmp_path, wide)
    assert table.schema.field("k").type == pa.float64()
    assert table.column("k").to_pylist() == [0.1, 0.8, 0.3]  # not 0.10000000149011612
    assert table.schema.field("n").type == pa.int32() and table.column("n").to_pylist() == [1, 2, 3]
    write("c.parquet", 3, [0.5], [2**40], k_type=pa.float64())
    with pytest.raises(SchemaError, match=r"c.parquet: column 'n' does not fit int32"):
        read_table(tmp_path, wide)
    write("c.parquet", 1, [0.5], [1])
    with pytest.raises(SchemaError, match=r"c.parquet: 'wide' schema version 1, .* version 3, 2"):
        read_table(tmp_path, wide)


CRASH = textwrap.dedent(
    """
    import os, sys
    import pyarrow.parquet as pq
    sys.path.insert(0, {tests!r})
    from test_shards import TOY, rows
    from stepprune.shards import ShardWriter
    real = pq.write_table
    calls = []
    def dying(table, where, **kw):
        real(table, where, **kw)
        calls.append(where)
        if len(calls) == 2:  # second shard: its temp file is on disk, not yet renamed
            os._exit(9)
    pq.write_table = dying
    w = ShardWriter({out!r}, TOY, rows_per_shard=3, tag="c")
    w.write(rows(6))
    """
)


def test_crash_mid_write_leaves_no_partial_shard(tmp_path):
    out = tmp_path / "out"
    code = CRASH.format(tests=os.path.dirname(__file__), out=str(out))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode == 9, proc.stderr.decode()
    leftovers = [p.name for p in out.iterdir()]
    assert any(n.startswith(".tmp-c-") for n in leftovers)  # the crash really was mid-write
    assert [f.name for f in shard_files(out)] == ["part-c-00000.parquet"]
    assert read_table(out, TOY).column("id").to_pylist() == ["r0", "r1", "r2"]
    # A new writer of the same tag cleans the temp file and continues after the whole shard.
    with ShardWriter(out, TOY, rows_per_shard=3, tag="c") as w:
        w.write(rows(3, start=3))
    assert not any(p.name.startswith(".tmp") for p in out.iterdir())
    assert existing_keys(out, TOY) == {(f"r{i}",) for i in range(6)}


def test_truncated_shard_file_is_reported_not_skipped(tmp_path):
    with ShardWriter(tmp_path, TOY, rows_per_shard=5, tag="t") as w:
        w.write(rows(5))
    f = shard_files(tmp_path)[0]
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(SchemaError, match=f.name):
        read_table(tmp_path, TOY)


def test_buffered_rows_are_flushed_once_flush_seconds_have_passed(tmp_path, monkeypatch):
    import stepprune.shards as shards

    clock = [1000.0]
    monkeypatch.setattr(shards.time, "monotonic", lambda: clock[0])
    with ShardWriter(tmp_path, TOY, rows_per_shard=100, tag="t", flush_seconds=60.0) as w:
        w.write(rows(3))
        clock[0] += 59.0
        w.maybe_flush()  # 59 s since the writer opened: the rows stay buffered
        assert shard_files(tmp_path) == []
        clock[0] += 1.0
        w.maybe_flush()  # 60 s: written
        assert [len(read_table(f, TOY)) for f in shard_files(tmp_path)] == [3]
        w.write(rows(2, start=3))
        clock[0] += 30.0
        w.maybe_flush()  # 30 s after the last flush: buffered again
        assert len(shard_files(tmp_path)) == 1
        clock[0] += 30.0
        w.maybe_flush()
        ids = [r["id"] for f in shard_files(tmp_path) for r in read_table(f, TOY).to_pylist()]
        assert ids == ["r0", "r1", "r2", "r3", "r4"]
