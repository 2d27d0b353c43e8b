"""Every Parquet schema stepprune writes, with its name and version, and the checks around them.

This module owns the on-disk contract that other projects load. A schema carries
``stepprune.schema`` and ``stepprune.schema_version`` in its Arrow metadata; writers validate rows
before Arrow sees them (pyarrow silently fills a missing key with null), and readers refuse a file
whose name differs or whose version it cannot read. A reader still takes a schema's older
versions listed in ``Schema.reads`` and casts their columns up to the current types (``upcast``),
so shards written before a type change keep loading. Column meanings are documented in
data/README.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

NAME_KEY = b"stepprune.schema"
VERSION_KEY = b"stepprune.schema_version"


class SchemaError(ValueError):
    """A row or a file does not match the schema it claims or is expected to have."""


@dataclass(frozen=True)
class Schema:
    """A named, versioned Arrow schema plus which columns must be present and non-null."""

    name: str
    version: int
    arrow: pa.Schema
    key: tuple[str, ...]
    # Older versions still read: same columns, some in narrower types that ``upcast`` widens.
    reads: tuple[int, ...] = ()

    def with_metadata(self) -> pa.Schema:
        return self.arrow.with_metadata(
            {NAME_KEY: self.name.encode(), VERSION_KEY: str(self.version).encode()}
        )

    @property
    def required(self) -> list[str]:
        return [f.name for f in self.arrow if not f.nullable]


STEP_TYPE = pa.struct(
    [
        pa.field("index", pa.int32(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("separator", pa.string(), nullable=False),
        pa.field("char_start", pa.int32(), nullable=False),
        pa.field("char_end", pa.int32(), nullable=False),
        pa.field("token_start", pa.int32(), nullable=False),
        pa.field("token_end", pa.int32(), nullable=False),
        pa.field("n_tokens", pa.int32(), nullable=False),
        pa.field("entropy_sum", pa.float32(), nullable=False),
        pa.field("entropy_mean", pa.float32(), nullable=False),
        pa.field("is_skip", pa.bool_(), nullable=False),
    ]
)


def _f(name: str, typ: pa.DataType, nullable: bool = False) -> pa.Field:
    return pa.field(name, typ, nullable=nullable)


def _problem_fields() -> list[pa.Field]:
    """Key and problem columns every per-trajectory schema starts with."""
    return [
        _f("problem_id", pa.string()),
        _f("sample_index", pa.int32()),
        _f("source", pa.string()),
        _f("problem", pa.string()),
        _f("gold_answer", pa.string()),
    ]


GENERATIONS = Schema(
    name="generations",
    version=1,
    key=("problem_id", "sample_index"),
    arrow=pa.schema(
        _problem_fields()
        + [
            _f("prompt", pa.string()),
            _f("prompt_token_ids", pa.list_(pa.int32())),
            _f("completion", pa.string()),
            _f("think_format", pa.string()),
            _f("thinking", pa.string()),
            _f("answer_text", pa.string()),
            _f("thinking_char_start", pa.int32()),
            _f("thinking_char_end", pa.int32()),
            _f("answer_char_start", pa.int32()),
            _f("token_ids", pa.list_(pa.int32())),
            _f("token_entropies", pa.list_(pa.float32())),
            _f("token_logprobs", pa.list_(pa.float32())),
            _f("token_entropy_lower", pa.list_(pa.float32()), nullable=True),
            _f("token_entropy_upper", pa.list_(pa.float32()), nullable=True),
            _f("token_tail_mass", pa.list_(pa.float32()), nullable=True),
            _f("entropy_source", pa.string()),
            _f("entropy_topk", pa.int32(), nullable=True),
            _f("n_tokens", pa.int32()),
            _f("n_thinking_tokens", pa.int32()),
            _f("steps", pa.list_(STEP_TYPE)),
            _f("n_steps", pa.int32()),
            _f("step_pattern", pa.string()),
            _f("extracted_answer", pa.string(), nullable=True),
            _f("correct", pa.bool_()),
            _f("finish_reason", pa.string()),
            _f("model", pa.string()),
            _f("backend", pa.string()),
            _f("seed", pa.int64()),
            _f("sampling", pa.string()),
            _f("versions", pa.string()),
            _f("created_at", pa.string()),
        ]
    ),
)

PRUNED = Schema(
    name="pruned",
    # v2: kappa float64, as in eval_results, so the two join on kappa (v1 wrote float32: 0.8
    # became 0.800000011920929 and matched no eval row). v1 is read, its kappa cast up.
    version=2,
    reads=(1,),
    key=("problem_id", "sample_index"),
    arrow=pa.schema(
        _problem_fields()
        + [
            _f("model", pa.string()),
            _f("entropy_source", pa.string()),
            _f("correct", pa.bool_()),
            _f("original_thinking", pa.string()),
            _f("compressed_thinking", pa.string()),
            _f("answer_text", pa.string()),
            _f("skip_mask", pa.list_(pa.bool_())),
            _f("n_steps", pa.int32()),
            _f("n_skipped", pa.int32()),
            _f("original_thinking_tokens", pa.int32()),
            _f("kept_thinking_tokens", pa.int32()),
            _f("compression_ratio", pa.float32()),
            _f("kappa", pa.float64()),
            _f("strategy", pa.string()),
            _f("score", pa.string()),
            _f("budget", pa.string()),
            _f("seed", pa.int64()),
            _f("prompt", pa.string()),
            _f("completion", pa.string()),
        ]
    ),
)

EVAL_RESULTS = Schema(
    name="eval_results",
    version=2,  # v2: seed in the key (random strategies at several seeds), pruning facts
    key=("problem_id", "sample_index", "strategy", "kappa", "seed"),
    arrow=pa.schema(
        [
            _f("problem_id", pa.string()),
            _f("sample_index", pa.int32()),
            _f("source", pa.string()),
            _f("gold_answer", pa.string()),
            _f("strategy", pa.string()),
            _f("kappa", pa.float64()),
            _f("score", pa.string()),
            _f("budget", pa.string()),
            _f("seed", pa.int64()),
            _f("n_steps", pa.int32()),
            _f("n_skipped", pa.int32()),
            _f("original_thinking_tokens", pa.int32()),
            _f("kept_thinking_tokens", pa.int32()),
            _f("original_tokens", pa.int32()),
            _f("original_correct", pa.bool_()),
            _f("n_pruned", pa.int32(), nullable=True),  # null: the token control prunes no steps
            _f("kept_states_answer", pa.bool_()),
            _f("pruned_answer_steps", pa.int32(), nullable=True),
            _f("pruned_arithmetic_steps", pa.int32(), nullable=True),
            _f("pruned_arithmetic_entropy", pa.float64(), nullable=True),
            _f("pruned_prose_entropy", pa.float64(), nullable=True),
            _f("entropy_source", pa.string()),
            _f("answer_prompt_tokens", pa.int32()),
            _f("answer_lead_in", pa.string()),
            _f("answer_text", pa.string()),
            _f("answer_finish_reason", pa.string()),
            _f("extracted_answer", pa.string(), nullable=True),
            _f("correct", pa.bool_()),
            _f("model", pa.string()),
            _f("backend", pa.string()),
            _f("created_at", pa.string()),
        ]
    ),
)

SCHEMAS: dict[str, Schema] = {s.name: s for s in (GENERATIONS, PRUNED, EVAL_RESULTS)}
ENTROPY_SOURCES = ("exact", "topk", "rescored")
FINISH_REASONS = ("stop", "length")


def validate_rows(rows: list[dict], schema: Schema, origin: str = "<rows>") -> None:
    """Raise SchemaError naming row and column for a missing, null or unknown column, or NaN."""
    names = set(schema.arrow.names)
    required = schema.required
    float_lists = [
        f.name
        for f in schema.arrow
        if pa.types.is_list(f.type) and pa.types.is_floating(f.type.value_type)
    ]
    for i, row in enumerate(rows):
        for col in required:
            if row.get(col) is None:
                raise SchemaError(f"{origin}: row {i}: column '{col}' is missing or null")
        extra = set(row) - names
        if extra:
            raise SchemaError(f"{origin}: row {i}: unknown columns {sorted(extra)}")
        for col in float_lists:
            values = row.get(col)
            # sum() is one C loop: only a NaN (or inf - inf) sum needs the per-value look
            if values and math.isnan(sum(values)) and any(math.isnan(v) for v in values):
                raise SchemaError(f"{origin}: row {i}: column '{col}' holds NaN")


def to_table(rows: list[dict], schema: Schema, origin: str = "<rows>") -> pa.Table:
    validate_rows(rows, schema, origin)
    return pa.Table.from_pylist(rows, schema=schema.with_metadata())


def identify(arrow_schema: pa.Schema) -> tuple[str | None, int | None]:
    meta = arrow_schema.metadata or {}
    name = meta.get(NAME_KEY)
    version = meta.get(VERSION_KEY)
    return (name.decode() if name else None, int(version) if version else None)


def check_file_schema(arrow_schema: pa.Schema, expected: Schema, path: str | Path) -> None:
    """Refuse a file that is not a stepprune ``expected`` file of a version it reads."""
    name, version = identify(arrow_schema)
    if name is None:
        raise SchemaError(
            f"{path}: not a stepprune file (no '{NAME_KEY.decode()}' metadata); "
            f"expected a '{expected.name}' v{expected.version} shard"
        )
    if name != expected.name:
        raise SchemaError(f"{path}: is a '{name}' file, expected '{expected.name}'")
    if version != expected.version and version not in expected.reads:
        readable = ", ".join(str(v) for v in (expected.version, *expected.reads))
        raise SchemaError(
            f"{path}: '{name}' schema version {version}, this stepprune reads version {readable}"
        )
    missing = [n for n in expected.arrow.names if n not in arrow_schema.names]
    if missing:
        raise SchemaError(f"{path}: columns {missing} are missing")
    for field in expected.arrow:
        found = arrow_schema.field(field.name).type
        if _family(found) != _family(field.type):
            raise SchemaError(f"{path}: column '{field.name}' is {found}, expected {field.type}")


def upcast(batch: pa.RecordBatch, schema: Schema, origin: str) -> pa.RecordBatch:
    """``batch`` with every column of ``schema`` in the schema's type and the current version's
    metadata, so batches of an older version (or of another writer's widths) read, and
    concatenate, as the current version. Columns already in their type are not copied."""
    fields, arrays = [], []
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        idx = schema.arrow.get_field_index(name)
        field = batch.schema.field(name) if idx < 0 else schema.arrow.field(idx)
        if column.type == pa.float32() and field.type == pa.float64():
            column = _decimal_float64(column)
        elif column.type != field.type:
            try:
                column = column.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise SchemaError(
                    f"{origin}: column '{name}' does not fit {field.type} ({e})"
                ) from e
        fields.append(field)
        arrays.append(column)
    meta = schema.with_metadata().metadata
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields, metadata=meta))


def _decimal_float64(column: pa.Array) -> pa.Array:
    """float32 values as float64 by their shortest decimal: a v1 kappa 0.8 was stored as
    0.800000011920929 and reads as 0.8 again, equal to the 0.8 of eval_results."""
    import numpy as np

    values = column.to_numpy(zero_copy_only=False).astype(np.float32)
    return pa.array(values.astype(str).astype(np.float64), mask=column.is_null().to_numpy(False))


def _family(t: pa.DataType) -> str:
    """A type up to width and offset size (int32 ~ int64, string ~ large_string, list ~ large_list),
    which other Parquet writers may choose differently without changing the meaning."""
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t):
        return f"list<{_family(t.value_type)}>"
    if pa.types.is_struct(t):
        return "struct<" + ",".join(f"{f.name}:{_family(f.type)}" for f in t) + ">"
    for name, test in (
        ("int", pa.types.is_integer),
        ("float", pa.types.is_floating),
        (
            "string",
            lambda x: (
                pa.types.is_string(x) or pa.types.is_large_string(x) or pa.types.is_string_view(x)
            ),
        ),
        ("bool", pa.types.is_boolean),
    ):
        if test(t):
            return name
    return str(t)


def open_parquet(path: str | Path):
    """``pq.ParquetFile(path)``, or a SchemaError naming the file if it is not Parquet."""
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise SchemaError(f"{path}: not a readable Parquet file ({e})") from e


def read_file_schema(path: str | Path) -> pa.Schema:
    pf = open_parquet(path)
    try:
        return pf.schema_arrow
    finally:
        pf.close()


def check_file(path: str | Path, expected: Schema) -> None:
    check_file_schema(read_file_schema(path), expected, path)


def check_nulls(table: pa.Table, schema: Schema, origin: str, first_row: int = 0) -> None:
    """Refuse nulls in the columns ``schema`` requires, naming the first such row (rows of
    ``table`` are numbered from ``first_row``, its place in the file)."""
    import pyarrow.compute as pc

    for name in table.column_names:
        if name in schema.required and table.column(name).null_count:
            row = first_row + pc.index(pc.is_null(table.column(name)), True).as_py()
            raise SchemaError(f"{origin}: row {row}: column '{name}' is null")


def validate_table(table: pa.Table, schema: Schema, origin: str = "<table>") -> pa.Table:
    """Vectorised ``validate_rows`` for whole Arrow tables: columns, nulls, then a cast."""
    missing = [n for n in schema.arrow.names if n not in table.column_names]
    if missing:
        raise SchemaError(f"{origin}: columns {missing} are missing")
    check_nulls(table, schema, origin)
    return table.select(schema.arrow.names).cast(schema.with_metadata())
