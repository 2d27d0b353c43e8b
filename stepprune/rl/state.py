"""Per-question state that survives steps, processes and resume.

A ``QuestionTable`` maps a stable question id (a dataset column, never a row position) to named
float values, e.g. CEEH's accuracy EMA and shortest-correct-length EMA. A question without a
value has never had one set: "unseen" is absence, never a sentinel such as -1 or 0, so 0 stays a
real value. Extensions update it only from gathered data (``rl.hooks.RolloutBatch``), so every
rank holds the same table; the trainer saves it in each checkpoint (``rl_state.json``) and
restores it on resume.
"""

from __future__ import annotations


class QuestionTable:
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, float]] = {}

    def get(self, question: str, name: str) -> float | None:
        return self.rows.get(question, {}).get(name)

    def set(self, question: str, name: str, value: float) -> None:
        self.rows.setdefault(question, {})[name] = float(value)

    def values(self, name: str) -> list[float]:
        """Every stored value of ``name`` (questions without one are left out)."""
        return [row[name] for row in self.rows.values() if name in row]

    def state_dict(self) -> dict:
        return {q: dict(row) for q, row in sorted(self.rows.items())}

    def load_state_dict(self, state: dict) -> None:
        self.rows = {str(q): {k: float(v) for k, v in row.items()} for q, row in state.items()}

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"QuestionTable({len(self.rows)} questions)"

    def __eq__(self, other) -> bool:
        return isinstance(other, QuestionTable) and self.rows == other.rows
