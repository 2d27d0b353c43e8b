"""math-verify's reading of an answer, checked before it is trusted: the grader's third rule.

Owns ``math_verify_equal`` (called by ``grading.verify``, inside its time bound) and the checks
around math-verify's verdict:

- coverage: a reading must keep every letter of its text (variables, Greek letters; not
  ``e``, ``i``, command names or ``\\text{...}`` units). math-verify strips letters it takes
  for units (``\\frac{37}{4} m`` -> 37/4, ``6m`` -> 6) and drops whole terms it cannot read
  (``\\frac{1}{3} E_{1}+\\frac{2}{3} E_{2}`` -> 2/3), after which any answer equal to the fragment
  passes. Nothing read, a string only, or text with a ``$`` inside (OlympiadBench's
  ``$221,$8$``: read up to it, 221) covers nothing. A gold that fails is read again with units
  kept; if it still fails, both sides are compared as normalised LaTeX text (``\\left``,
  ``\\right``, spacing and ``\\dfrac`` ignored). A prediction that fails both readings is
  compared as text too.
- numbers: when both readings are single real numbers they are compared by
  ``answer_numbers.numbers_equal`` (exact, or within the precision a decimal is written to), not
  by math-verify's rounding to 6 decimals, which accepts ``\\frac{21021}{312500000}`` for
  ``.0000672``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from stepprune.data.answer_numbers import bare, numbers_equal, sympy_number

_GREEK = frozenset(
    re.findall(
        r"\w+",
        "alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa lambda mu "
        "nu xi rho sigma varsigma tau upsilon phi varphi chi psi omega hbar ell",
    )
)
# Groups whose letters are words, not variables: units, operator names, environments.
_WORD_GROUP_RE = re.compile(r"\\(?:text\w*|mathrm|mbox|operatorname|begin|end)\s*\{[^{}]*\}")
_COMMAND_RE = re.compile(r"\\([A-Za-z]+)")
# Names in sympy's printout that are functions or constants, not variables.
_SYMPY_WORDS = frozenset(
    re.findall(
        r"\w+",
        "sqrt exp log sin cos tan cot sec csc asin acos atan acot sinh cosh tanh floor ceiling "
        "binomial factorial derivative integral eq ne interval open lopen ropen finiteset union "
        "intersection complement matrix mutabledensematrix tuple oo zoo nan pi abs re im max min "
        "mod e i",
    )
)


def _letters(latex: str) -> set[str]:
    """The variables of a LaTeX answer, lower-cased: its letters outside commands and word
    groups, and its Greek letters by name. ``e`` and ``i`` (constants) are left out."""
    names: set[str] = set()

    def command(match: re.Match) -> str:
        if match.group(1).lower() in _GREEK:
            names.add(match.group(1).lower())
        return " "

    text = _COMMAND_RE.sub(command, _WORD_GROUP_RE.sub(" ", latex))
    names.update(ch.lower() for ch in re.findall(r"[A-Za-z]", text) if ch not in "ei")
    return names


def _names(expr: Any) -> set[str]:
    """Lower-cased names in sympy's printout of ``expr``, plus the single letters of every name
    that is not a function or constant (``dt`` -> d, t; ``r_0`` -> r)."""
    words = {w.lower() for w in re.findall(r"[A-Za-z]+", str(expr))}
    letters = {ch for word in words - _SYMPY_WORDS for ch in word}
    if "derivative" in words:
        letters.add("d")  # d/dt notation
    return words | letters


def covers(latex: str, reading: list) -> bool:
    """Whether math-verify's ``reading`` of ``latex`` is an expression that keeps every variable
    of the text. Nothing read, or only a string (``L_{\\odot}``), covers nothing; nor does text
    with an unescaped ``$`` inside (OlympiadBench's ``$221,$8$``: read up to it)."""
    from sympy import Basic, MatrixBase

    if not reading or not isinstance(reading[0], Basic | MatrixBase):
        return False
    if re.search(r"(?<!\\)\$", latex):
        return False
    return _letters(latex) <= _names(reading[0])


def latex_key(text: str) -> str:
    """``text`` as LaTeX with presentation differences removed, for comparing unreadable
    answers as text."""
    text = bare(text).replace("$", "")
    text = re.sub(r"\\(?:left|right|displaystyle|[,;:! ])(?![A-Za-z])", "", text)
    text = re.sub(r"\\[dt]frac", r"\\frac", text)
    text = re.sub(r"\s+", "", text)
    text = re.sub(r"([_^])\{([A-Za-z0-9])\}", r"\1\2", text)
    return text.rstrip(".")


def _not_timeout_notice(record: logging.LogRecord) -> bool:
    """Drops math-verify's warning that its timeouts are off: ``verify`` bounds time itself."""
    return not str(record.msg).startswith("Timeout is disabled")


def _read(latex: str, units: bool) -> list:
    """math-verify's reading of ``latex``; ``units`` lets it strip what it takes for units."""
    from latex2sympy2_extended import NormalizationConfig
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    normal = NormalizationConfig(
        basic_latex=True, units=units, malformed_operators=True, nits=True, boxed="all"
    )
    config = [
        LatexExtractionConfig(boxed_match_priority=0, normalization_config=normal),
        ExprExtractionConfig(),
    ]
    return parse(latex, config, parsing_timeout=None)


def _readings(pred_latex: str, gold_latex: str) -> tuple[list, list] | None:
    """(pred, gold) readings that keep every variable, or None when one side has none."""
    units = True
    gold = _read(gold_latex, units)
    if not covers(gold_latex, gold):
        units = False
        gold = _read(gold_latex, units)
        if not covers(gold_latex, gold):
            return None
    pred = _read(pred_latex, units)
    if not covers(pred_latex, pred) and not (
        units and covers(pred_latex, _read(pred_latex, False))
    ):
        return None  # units stripped from a prediction are fine ("5 m" for 5); lost terms not
    return pred, gold


def math_verify_equal(pred: str, gold: str, pred_latex: str, gold_latex: str) -> bool:
    """math-verify's verdict on ``pred`` against ``gold`` (given also as the LaTeX to parse),
    with the checks of the module docstring; its own signal-based timeouts are off."""
    from math_verify import verify as mv_verify

    for name in ("math_verify.parser", "math_verify.grader"):
        logging.getLogger(name).addFilter(_not_timeout_notice)  # idempotent
    readings = _readings(pred_latex, gold_latex)
    if readings is None:
        return latex_key(pred) == latex_key(gold)
    pred_parsed, gold_parsed = readings
    pred_number = sympy_number(pred_parsed[0], pred)
    gold_number = sympy_number(gold_parsed[0], gold)
    if pred_number and gold_number and not (pred_number.approximate and gold_number.approximate):
        return numbers_equal(pred_number, gold_number)
    return bool(mv_verify(gold_parsed, pred_parsed, timeout_seconds=None))
