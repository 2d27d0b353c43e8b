"""Writes tests/data/grading_cases.jsonl: grading cases built from the real gold answers of every
built-in problem set, each labelled by how its prediction was made, never by a grader.

    STEPPRUNE_DATA_DIR=../shared/data/math .venv/bin/python tests/data/make_grading_cases.py

A row is {source, id, gold, pred, label, kind}: ``gold`` as the loader normalises it, ``pred`` a
completion's closing text. The label follows from the kind, reasoned by hand:

- ``format_*`` (the gold verbatim in a \\boxed{}, "The answer is", "####" or Minerva's "Final
  Answer: ... I hope it is correct." sentence) and ``rewrite_*`` (the same value written another
  way: thousands separators, a currency sign, "27.0" or "18.", a fraction for a terminating
  decimal, the decimal of a fraction to 10 places, a percentage, "x = ", a leading zero, a unit,
  \\dfrac, \\text{}, spacing, \\left( \\right), case) are correct;
- ``miss_*`` (off by one, the sign flipped, two adjacent digits swapped, the last digit changed,
  a fraction 0.1% away from a decimal, a non-terminating fraction rounded to 2 places, the
  reciprocal, one integer literal of an expression increased, a time read as a fraction, another
  answer of the same set, a fragment that drops a term or factor) are wrong.

Which golds are used is a seeded sample per set, plus every integer gold of 100,000 or more in
the test sets (off by one) and the golds that math-verify reads as a fragment.
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
from fractions import Fraction
from pathlib import Path

from stepprune.data.load import builtin_names, load_problems

OUT = Path(__file__).with_name("grading_cases.jsonl")
SEED = 22
FORMATS = {
    "boxed": "So the result is $\\boxed{{{}}}$.",
    "answer_is": "The answer is {}.",
    "hash": "Adding these up gives the total.\n#### {}",
    "minerva": "Final Answer: The final answer is ${}$. I hope it is correct.",
}
# Golds math-verify reads as a fragment, with the fragment a careless answer would give (the part
# before the dropped factor or term) and a rewrite that keeps everything (spacing only).
FRAGMENTS = {
    "minerva-104": ("\\frac{37}{4}", "\\frac{37}{4}m"),
    "minerva-116": ("\\frac{1}{m}", "\\frac{1}{m}t"),
    "minerva-137": ("\\frac{1}{\\sqrt{2}}", "\\frac{1}{\\sqrt{2}} c"),
    "minerva-138": (
        "m_{p} c^{2} \\sin ^{2} \\theta",
        "m_{p}c^{2}\\left(\\gamma^{2}-1\\right)\\sin^{2}\\theta",
    ),
    "minerva-261": (
        "\\hbar \\omega(v+1 / 2)",
        "\\hbar\\omega(v+1/2)-\\frac{E_{0}^{2}e^{2}}{2m\\omega^{2}}",
    ),
    "minerva-268": ("\\frac{2}{3}", "\\frac{1}{3}E_{1}+\\frac{2}{3}E_{2}"),
    "olympiadbench-2185": ("6", "6 m"),
    "olympiadbench-2349": ("221", "221, 8"),
}


def number(gold: str) -> tuple[Fraction, str] | None:
    """(value, decoration kind) of a numeric gold as this script reads it, else None. Only the
    shapes that occur in the sets: 12, -3.5, .35, 4.5e33, 3/7, \\frac{a}{b}, 62.5%, 90^\\circ,
    \\$18.90, 10,\\!080, x=5, 5.4 \\text{ cents}."""
    text = re.sub(r"\^\{?\\circ\}?|\\text\{[^{}]*\}|^\\\$|^[a-z]=|\\!", "", gold)
    text = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text).strip()
    percent = text.endswith("%")
    text = text.rstrip("%").strip()
    frac = re.fullmatch(r"(-?)\\frac\{(\d+)\}\{(\d+)\}", text)
    if frac:
        value = Fraction(int(frac.group(2)), int(frac.group(3))) * (-1 if frac.group(1) else 1)
    elif re.fullmatch(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:e-?\d+)?|-?\d+/\d+", text):
        value = Fraction(text)
    else:
        return None
    return (value / 100 if percent else value), ("percent" if percent else "")


def is_integer_text(gold: str) -> bool:
    return re.fullmatch(r"-?\d+(?:\.0+)?", gold) is not None


def decimal(value: Fraction, places: int) -> str:
    """``value`` written with ``places`` decimals (rounded half away from zero)."""
    scaled = abs(value) * 10**places
    digits = str(int(scaled + Fraction(1, 2))).rjust(places + 1, "0")
    sign = "-" if value < 0 else ""
    return f"{sign}{digits[:-places]}.{digits[-places:]}" if places else f"{sign}{digits}"


def exact_decimal(value: Fraction) -> str | None:
    """The terminating decimal of ``value``, or None when it does not terminate."""
    for places in range(0, 20):
        if (value * 10**places).denominator == 1:
            return decimal(value, places)
    return None


def latex_frac(value: Fraction) -> str:
    sign = "-" if value < 0 else ""
    return f"{sign}\\frac{{{abs(value.numerator)}}}{{{value.denominator}}}"


def swap_digits(text: str) -> str | None:
    for i in range(len(text) - 1):
        if text[i].isdigit() and text[i + 1].isdigit() and text[i] != text[i + 1]:
            return text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    return None


def integer_cases(gold: str, v: int, source: str) -> list:
    out = [(str(v + 1), False, "miss_off_by_one", None)]
    if v:
        out.append((str(-v), False, "miss_sign", None))
    swapped = swap_digits(str(abs(v)))
    if swapped:
        out.append((("-" if v < 0 else "") + swapped, False, "miss_digit_swap", None))
    if abs(v) >= 1000:
        out.append((f"{v:,}", True, "rewrite_thousands", None))
        out.append((f"x = {v:,}".replace(",", ",\\!"), True, "rewrite_assignment", None))
    if source in ("gsm8k", "gsm8k_train", "svamp") and v > 0:
        out.append((f"\\${v:,}".replace(",", ",\\!"), True, "rewrite_currency", None))
    out.append((str(v) if "." in gold else f"{v}.0", True, "rewrite_decimal_point", None))
    out.append((f"{v}.", True, "rewrite_trailing_point", "boxed"))
    if source == "aime24" and 0 <= v < 100:
        out.append((f"{v:03d}", True, "rewrite_leading_zero", None))
    return out


def scientific_cases(gold: str) -> list:
    """Minerva's "4.5e33": the same in LaTeX; the mantissa's last digit or the exponent off."""
    mantissa, exponent = gold.split("e")
    bumped = mantissa[:-1] + str(int(mantissa[-1]) + 1) if mantissa[-1] != "9" else mantissa + "1"
    return [
        (f"{mantissa} \\times 10^{{{int(exponent)}}}", True, "rewrite_scientific", None),
        (f"{bumped} \\times 10^{{{int(exponent)}}}", False, "miss_last_digit", None),
        (f"{mantissa} \\times 10^{{{int(exponent) + 1}}}", False, "miss_off_by_one", None),
        (f"-{mantissa} \\times 10^{{{int(exponent)}}}", False, "miss_sign", None),
    ]


def fraction_cases(gold: str, value: Fraction) -> list:
    """A non-integer gold: a decimal (12.5, .0000672) or a fraction (3/7, \\frac{14}{3})."""
    out = []
    written = exact_decimal(value)
    if "\\frac" not in gold and "/" not in gold:  # a decimal
        places = len(written.partition(".")[2])
        out.append((latex_frac(value), True, "rewrite_fraction", None))
        out.append(
            (latex_frac(value * Fraction(1001, 1000)), False, "miss_fraction_vs_decimal", None)
        )
        out.append(
            (decimal(value + Fraction(1, 10**places), places), False, "miss_last_digit", None)
        )
        if 0 < value < 1:
            out.append((f"{exact_decimal(value * 100)}\\%", True, "rewrite_percent", None))
    else:
        out.append((written or decimal(value, 10), True, "rewrite_decimal", None))
        if written is None and abs(value) < 100:
            out.append((decimal(value, 2), False, "miss_rounded", None))
        if abs(value.numerator) != value.denominator:
            out.append((latex_frac(1 / value), False, "miss_reciprocal", None))
        if "\\frac" in gold:
            out.append((gold.replace("\\frac", "\\dfrac"), True, "rewrite_dfrac", None))
    out.append((latex_frac(-value), False, "miss_sign", None))
    return out


def numeric_cases(gold: str, source: str) -> list:
    """(pred answer, label, kind, format or None) for a numeric gold."""
    value, decoration = number(gold)
    if decoration == "percent":
        pct = exact_decimal(value * 100)
        return [
            (exact_decimal(value), True, "rewrite_percent", None),
            (f"{pct}\\%", True, "rewrite_percent", None),
            (f"{exact_decimal(value * 100 + 1)}\\%", False, "miss_off_by_one", None),
        ]
    if "e" in gold:
        return scientific_cases(gold)
    if value.denominator == 1:
        return integer_cases(gold, int(value), source)
    return fraction_cases(gold, value)


SPACE_RE = re.compile(r"\s+(?=[^A-Za-z\s])|(?<=[^A-Za-z\s])\s+")
NOT_SCALAR_RE = re.compile(r"[=,<>$]|\\(?:in|cup|begin|le|ge|pm|text)(?![a-z])|^[(\[]")


def math_cases(gold: str) -> list:
    """An expression, tuple, set or equation gold."""
    out = [(gold, True, "format_boxed", "boxed"), (gold, True, "format_minerva", "minerva")]
    spaced = SPACE_RE.sub("", gold)
    if spaced != gold:
        out.append((spaced, True, "rewrite_spacing", None))
    if "\\frac" in gold:
        out.append((gold.replace("\\frac", "\\dfrac"), True, "rewrite_dfrac", None))
    if re.fullmatch(r"\(.*\)", gold) and "\\left" not in gold:
        out.append((f"\\left{gold[:-1]}\\right)", True, "rewrite_left_right", None))
    literal = re.search(r"\d+", gold)
    if literal:
        bumped = str(int(literal.group()) + 1)
        out.append(
            (gold[: literal.start()] + bumped + gold[literal.end() :], False, "miss_literal", None)
        )
    if not NOT_SCALAR_RE.search(gold):
        out.append((f"-\\left({gold}\\right)", False, "miss_sign", None))
    return out


def word_key(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", re.sub(r"\\text\{([^{}]*)\}", r"\1", text).lower())


def word_cases(gold: str, others: list[str], rng: random.Random) -> list:
    """A word gold ("Mrs. Hilt", \\text{Evelyn}, "3:30 p.m.")."""
    plain = re.sub(r"\\text\{([^{}]*)\}", r"\1", gold)
    out = [
        (plain, True, "format_answer_is", "answer_is"),
        (f"\\text{{{plain}}}", True, "rewrite_text", "boxed"),
        (re.sub(r"[^\w\s]", "", plain).lower(), True, "rewrite_case", "answer_is"),
    ]
    different = [o for o in others if word_key(o) != word_key(gold)]
    if different:
        out.append((rng.choice(different), False, "miss_other_word", "answer_is"))
    first = plain.split()[0]
    if " " in plain and not first[0].isdigit() and word_key(first) != word_key(plain):
        out.append((first, False, "miss_truncated", "answer_is"))
    return out


def colon_cases(gold: str, question: str) -> list:
    """ASDiv's clock times ("5:45") and ratios ("3:4")."""
    *head, last = gold.split(":")
    out = [
        (gold, True, "format_answer_is", "answer_is"),
        (":".join(head + [str(int(last) + 1)]), False, "miss_off_by_one", "answer_is"),
    ]
    if "time" in question.lower() and len(head) == 1 and int(last):
        as_fraction = Fraction(int(head[0]), int(last))
        out.append(
            (
                f"{as_fraction.numerator}/{as_fraction.denominator}",
                False,
                "miss_time_as_fraction",
                None,
            )
        )
    return out


def kind_of(gold: str) -> str:
    if re.fullmatch(r"\d+(?::\d+)+", gold):
        return "colon"
    plain = re.sub(r"\\text\{([^{}]*)\}", r"\1", gold)
    if re.fullmatch(r"[A-Za-z0-9 .,'’:!?\-]+", plain) and re.search(
        r"[A-Za-z]{2}|[ap]\.m\.", plain
    ):
        return "word"
    read = number(gold)
    if read is None:
        return "math"
    return "integer" if read[0].denominator == 1 and "e" not in gold and not read[1] else "decimal"


# Golds sampled per set and shape (default: DEFAULT_SAMPLE), plus those of ALWAYS.
DEFAULT_SAMPLE = {"integer": 5, "decimal": 3, "math": 0, "word": 0, "colon": 0}
SAMPLE = {
    "gsm8k": {"integer": 8},
    "math500": {"integer": 6, "decimal": 6, "math": 10, "word": 2},
    "minerva": {"integer": 4, "decimal": 10, "math": 6},
    "olympiadbench": {"integer": 4, "decimal": 6, "math": 10},
    "asdiv": {"integer": 5, "decimal": 8, "word": 6, "colon": 6},
    "mawps_addsub": {"integer": 3},
    "mawps_multiarith": {"integer": 3},
    "mawps_singleeq": {"integer": 3},
    "mawps_singleop": {"integer": 3},
}
# The golds of issue #22's examples.
ALWAYS = {
    "math500-test/number_theory/598.json",  # .0000672
    "math500-test/counting_and_probability/508.json",  # 10,\!080
    "math500-test/algebra/2626.json",  # \$32,\!348
    "asdiv-29",  # Mrs. Hilt
    "svamp-chal-623",  # 1201565.0
}


def gold_cases(problem, shape: str, others: list[str], rng: random.Random) -> list:
    gold = problem.answer
    if shape in ("integer", "decimal"):
        return [(gold, True, "format_{}", None), *numeric_cases(gold, problem.source)]
    if shape == "math":
        return math_cases(gold)
    if shape == "word":
        return word_cases(gold, others, rng)
    return colon_cases(gold, problem.problem)


def unit_cases(gold: str, raw: str | None) -> list:
    """The gold with its unit: ASDiv's "9 (apples)" -> "9 apples"; a gold's own unit dropped
    ("90^\\circ" -> "90", "5.4 \\text{ cents}" -> "5.4")."""
    in_parens = re.fullmatch(r"\s*-?[\d.]+\s*\(([^()]+)\)\s*", raw or "")
    if in_parens:
        return [(f"{gold} {in_parens.group(1).strip()}", True, "rewrite_units", None)]
    bare = re.sub(r"\s*(?:\^\{?\\circ\}?|\\text\{[^{}]*\})", "", gold)
    return [(bare, True, "rewrite_units", None)] if bare != gold else []


def raw_answers(name: str, data_dir: str) -> dict[str, str]:
    """ASDiv's answers as published ("9 (apples)"), by problem id; the loader keeps the number."""
    if name != "asdiv":
        return {}
    path = Path(data_dir) / "asdiv_test.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return {f"asdiv-{row['idx']}": row["answer"] for row in rows}


def large_integer_cases(gold: str) -> list:
    """Off by one on a gold of 100,000 or more, where a relative 1e-5 no longer separates them."""
    v = int(number(gold)[0])
    return [
        (str(v + 1), False, "miss_off_by_one", None),
        (f"{v:,}", True, "rewrite_thousands", None),
    ]


def set_cases(name: str, data_dir: str, rng: random.Random) -> list:
    problems = load_problems(name, data_dir=data_dir)
    shapes: dict[str, list] = {}
    for p in problems:
        if p.id not in FRAGMENTS and "$" not in p.answer:
            shapes.setdefault(kind_of(p.answer), []).append(p)
    words = [p.answer for p in shapes.get("word", [])]
    raw = raw_answers(name, data_dir)
    rows = []
    for shape, pool in sorted(shapes.items()):
        count = min(SAMPLE.get(name, {}).get(shape, DEFAULT_SAMPLE[shape]), len(pool))
        picked = rng.sample(pool, count) + [p for p in pool if p.id in ALWAYS]
        for p in sorted(set(picked), key=picked.index):
            rows += [(p, *case) for case in gold_cases(p, shape, words, rng)]
            if shape in ("integer", "decimal"):
                rows += [(p, *case) for case in unit_cases(p.answer, raw.get(p.id))]
    numeric = shapes.get("integer", []) + shapes.get("decimal", [])
    with_units = [p for p in numeric if unit_cases(p.answer, raw.get(p.id))]
    hyphenated = [p for p in with_units if "-" in re.sub(r"^\s*-", "", raw.get(p.id, ""))]
    for pool, count in ((with_units, 4), (hyphenated, 2)):
        for p in rng.sample(pool, min(count, len(pool))):
            rows += [(p, *case) for case in unit_cases(p.answer, raw.get(p.id))]
    if name != "gsm8k_train":
        for p in shapes.get("integer", []):
            if abs(number(p.answer)[0]) >= 100_000:
                rows += [(p, *case) for case in large_integer_cases(p.answer)]
    for p in problems:
        if p.id in FRAGMENTS:
            fragment, rewrite = FRAGMENTS[p.id]
            rows.append((p, fragment, False, "miss_fragment", None))
            rows.append((p, rewrite, True, "rewrite_spacing", None))
    return rows


def main() -> None:
    data_dir = os.environ.get("STEPPRUNE_DATA_DIR") or str(
        Path(__file__).resolve().parents[3] / "shared/data/math"
    )
    rng = random.Random(SEED)
    rows, seen, turn = [], set(), 0
    for name in builtin_names():
        for problem, answer, label, kind, fmt in set_cases(name, data_dir, rng):
            if (problem.answer, answer, kind) in seen:
                continue
            seen.add((problem.answer, answer, kind))
            allowed = list(FORMATS) if number(problem.answer) else ["boxed", "minerva"]
            fmt = fmt or allowed[turn % len(allowed)]
            turn += 1
            rows.append(
                {
                    "source": name,
                    "id": problem.id,
                    "gold": problem.answer,
                    "pred": FORMATS[fmt].format(answer),
                    "label": label,
                    "kind": kind.format(fmt),
                }
            )
    with OUT.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(rows)} cases -> {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
