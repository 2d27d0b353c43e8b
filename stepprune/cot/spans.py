"""The step-span invariant of generations rows, checked on read (prune, eval), vectorised.

What ``cot.steps.build_steps`` guarantees, and a shard edited or written by another tool may
break: in each row with steps,

- chars: thinking_char_start <= char_start < char_end <= thinking_char_end, and each step starts
  at or after the previous one's end (no overlap, no step running backwards);
- tokens: the spans partition range(n_thinking_tokens): the first starts at 0, each starts where
  the previous ended, the last ends at n_thinking_tokens, none runs backwards, and
  n_tokens = token_end - token_start.

A violation is a ``SchemaError`` naming the file, row and step.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from stepprune.schema import SchemaError


def _steps_arrays(table: pa.Table) -> dict[str, np.ndarray]:
    steps = table.column("steps").combine_chunks()
    flat = pc.list_flatten(steps)
    fields = ("char_start", "char_end", "token_start", "token_end", "n_tokens")
    out = {f: pc.struct_field(flat, f).to_numpy(zero_copy_only=False) for f in fields}
    out["row"] = pc.list_parent_indices(steps).to_numpy(zero_copy_only=False)
    out["index"] = pc.struct_field(flat, "index").to_numpy(zero_copy_only=False)
    return out


def check_step_spans(table: pa.Table, origin: str, first_row: int = 0) -> None:
    """Refuse rows whose step spans break the invariant (module docstring)."""
    if table.num_rows == 0 or pc.sum(pc.list_value_length(table.column("steps"))).as_py() in (
        None,
        0,
    ):
        return
    s = _steps_arrays(table)
    row = s["row"]
    think_start = table.column("thinking_char_start").to_numpy(zero_copy_only=False)[row]
    think_end = (
        think_start + pc.utf8_length(table.column("thinking")).to_numpy(zero_copy_only=False)[row]
    )
    n_thinking = table.column("n_thinking_tokens").to_numpy(zero_copy_only=False)[row]
    first = np.r_[True, row[1:] != row[:-1]]
    last = np.r_[row[1:] != row[:-1], True]
    prev_char_end = np.r_[0, s["char_end"][:-1]]
    prev_token_end = np.r_[0, s["token_end"][:-1]]
    problems = [
        (s["char_start"] < think_start, "char_start lies before the thinking"),
        (s["char_end"] > think_end, "char_end lies beyond the thinking"),
        (s["char_end"] <= s["char_start"], "char span is empty or runs backwards"),
        (~first & (s["char_start"] < prev_char_end), "char span overlaps the step before"),
        (s["token_end"] < s["token_start"], "token span runs backwards"),
        (first & (s["token_start"] != 0), "the first step does not start at token 0"),
        (~first & (s["token_start"] != prev_token_end), "token span leaves a gap or overlaps"),
        (last & (s["token_end"] != n_thinking), "the last step does not end at n_thinking_tokens"),
        (s["n_tokens"] != s["token_end"] - s["token_start"], "n_tokens != token_end - token_start"),
    ]
    for bad, reason in problems:
        if bad.any():
            i = int(np.argmax(bad))
            raise SchemaError(
                f"{origin}: row {first_row + int(row[i])}: step {int(s['index'][i])}: {reason}"
            )
