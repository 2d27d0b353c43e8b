"""Registry of the built-in benchmark problem sets.

Owns, per benchmark: the local file name, how a row maps to problem text / gold answer / id,
how the gold answer is normalised, and which public hub dataset to fall back to when the file
is absent. Loading and validation live in ``stepprune.data.load``.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stepprune.data.grading import last_boxed


class GoldError(ValueError):
    """A gold answer that cannot be normalised; the loader adds file, line and field."""


def _require_text(value: Any) -> str:
    if not isinstance(value, str):
        raise GoldError(f"expected text, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise GoldError("empty")
    return text


def plain_answer(value: Any) -> str:
    """Generic gold: text (outer ``$`` dropped), a number (floats keep their text, "27.0"),
    or a list of those joined with ", "."""
    if isinstance(value, bool) or value is None:
        raise GoldError(f"expected text or a number, got {value!r}")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise GoldError(f"not a finite number: {value!r}")
        return repr(value)
    if isinstance(value, list | tuple):
        if not value:
            raise GoldError("empty list")
        return ", ".join(plain_answer(item) for item in value)
    text = _require_text(value)
    if len(text) > 1 and text.startswith("$") and text.endswith("$") and "$" not in text[1:-1]:
        text = text[1:-1].strip()
    if not text:
        raise GoldError("empty")
    return text


def gsm8k_answer(value: Any) -> str:
    """The text after the last ``#### `` with thousands separators removed ("1,000" -> "1000")."""
    text = _require_text(value)
    if "####" not in text:
        raise GoldError("no '####' marker")
    gold = text.rsplit("####", 1)[1].strip().replace(",", "")
    if not gold:
        raise GoldError("nothing after '####'")
    return gold


def integer_answer(value: Any) -> str:
    """An integer written with or without leading zeros (AIME's "025") -> "25"."""
    text = plain_answer(value)
    if not re.fullmatch(r"[-+]?\d+", text):
        raise GoldError(f"not an integer: {text!r}")
    return str(int(text))


def boxed_answer(value: Any) -> str:
    """The last ``\\boxed{...}`` of a worked solution (nested braces handled)."""
    gold = last_boxed(_require_text(value))
    if gold is None:
        raise GoldError("no \\boxed{...} in the solution")
    return gold


def minerva_answer(value: Any) -> str:
    """Minerva: the last ``\\boxed{...}`` of ``solution``, repaired for three quirks of the
    source: stray ``$`` inside the box, Python float literals ("-1./3") and ``np.`` functions."""
    gold = boxed_answer(value).replace("$", " ")
    gold = re.sub(r"(\d)\.(?![\d])", r"\1", gold)
    gold = re.sub(r"\bnp\.([a-z]+)", r"\\\1", gold)
    gold = re.sub(r"\s+", " ", gold).strip()
    if not gold:
        raise GoldError("empty \\boxed{}")
    return gold


def olympiad_answer(value: Any) -> str:
    """OlympiadBench ``final_answer``: a list (or its text, "['$x=1$', '$y=2$']"); each item
    may itself be several ``$..$`` groups joined by commas. All parts are joined with ", "
    and lose their ``$`` delimiters and a trailing full stop."""
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError) as exc:
            raise GoldError(f"unreadable list: {exc}") from None
    items = value if isinstance(value, list) else [value]
    parts = []
    for item in items:
        text = _require_text(item).rstrip(".").strip()
        groups = re.fullmatch(r"\$[^$]+\$(?:\s*,\s*\$[^$]+\$)*", text)
        if groups:
            parts.extend(g.strip() for g in re.findall(r"\$([^$]+)\$", text))
        else:
            parts.append(text)
    if not parts:
        raise GoldError("empty list")
    return ", ".join(parts)


def asdiv_answer(value: Any) -> str:
    """ASDiv: "9 (apples)" -> "9"; non-numeric answers (ratios "3:4", times "3:30 p.m.",
    names "Mrs. Hilt") stay as written."""
    text = _require_text(value)
    number = re.fullmatch(r"(-?\d+(?:\.\d+)?)\s*(?:\(.*\))?", text)
    if number:
        return number.group(1)
    # Drop a sentence's full stop ("The 60th caller.") but not the one of "3:30 p.m.".
    return re.sub(r"([A-Za-z]{2}|\d)\.$", r"\1", text)


@dataclass(frozen=True)
class RowMap:
    """How one row becomes a problem: text fields (each stripped) joined with a space, the
    gold field and its normaliser, and the id field (None: row index)."""

    problem_fields: tuple[str, ...]
    answer_field: str
    normalise: Callable[[Any], str] = plain_answer
    id_field: str | None = None


@dataclass(frozen=True)
class HubSource:
    """A public dataset holding the same benchmark, for machines without the local file."""

    path: str
    split: str
    rows: RowMap
    config: str | None = None
    data_files: str | None = None


@dataclass(frozen=True)
class ProblemSet:
    name: str
    filename: str
    rows: RowMap
    hub: HubSource


def _mawps(kind: str) -> ProblemSet:
    rows = RowMap(("input",), "target")
    hub = HubSource(
        "HuggingFaceTB/math_tasks", "train", rows, data_files=f"data/mawps/{kind}.jsonl"
    )
    return ProblemSet(f"mawps_{kind}", f"mawps_{kind}_test.jsonl", rows, hub)


_GSM8K_ROWS = RowMap(("question",), "answer", gsm8k_answer)
_MATH500_ROWS = RowMap(("problem",), "answer", id_field="unique_id")
_AIME_ROWS = RowMap(("problem",), "answer", integer_answer, "id")
_OLYMPIAD_ROWS = RowMap(("question",), "final_answer", olympiad_answer, "id")
_SVAMP_ROWS = RowMap(("Body", "Question"), "Answer", id_field="ID")

BUILTINS: dict[str, ProblemSet] = {
    s.name: s
    for s in (
        ProblemSet(
            "gsm8k",
            "gsm8k_test.jsonl",
            _GSM8K_ROWS,
            HubSource("openai/gsm8k", "test", _GSM8K_ROWS, config="main"),
        ),
        ProblemSet(
            "gsm8k_train",
            "gsm8k_train.jsonl",
            _GSM8K_ROWS,
            HubSource("openai/gsm8k", "train", _GSM8K_ROWS, config="main"),
        ),
        ProblemSet(
            "math500",
            "math500_test.jsonl",
            _MATH500_ROWS,
            HubSource("HuggingFaceH4/MATH-500", "test", _MATH500_ROWS),
        ),
        ProblemSet(
            "aime24",
            "aime24_test.jsonl",
            _AIME_ROWS,
            HubSource("HuggingFaceH4/aime_2024", "train", _AIME_ROWS),
        ),
        ProblemSet(
            "amc23",
            "amc23_test.jsonl",
            RowMap(("problem",), "answer", id_field="id"),
            HubSource("math-ai/amc23", "test", RowMap(("question",), "answer", id_field="id")),
        ),
        ProblemSet(
            "minerva",
            "minerva_math_test.jsonl",
            RowMap(("problem",), "solution", minerva_answer, "idx"),
            HubSource("math-ai/minervamath", "test", RowMap(("question",), "answer")),
        ),
        ProblemSet(
            "olympiadbench",
            "olympiadbench_test.jsonl",
            _OLYMPIAD_ROWS,
            HubSource("Hothan/OlympiadBench", "train", _OLYMPIAD_ROWS, "OE_TO_maths_en_COMP"),
        ),
        ProblemSet(
            "svamp",
            "svamp_test.jsonl",
            _SVAMP_ROWS,
            HubSource("ChilleD/SVAMP", "train+test", _SVAMP_ROWS),
        ),
        ProblemSet(
            "asdiv",
            "asdiv_test.jsonl",
            RowMap(("body", "question"), "answer", asdiv_answer, "idx"),
            HubSource(
                "EleutherAI/asdiv",
                "validation",
                RowMap(("body", "question"), "answer", asdiv_answer),
                config="asdiv",
            ),
        ),
        _mawps("addsub"),
        _mawps("multiarith"),
        _mawps("singleeq"),
        _mawps("singleop"),
    )
}
