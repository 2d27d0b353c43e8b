"""Plain numbers in answers: reading them and deciding when two are equal, for the grader.

Owns ``plain_number`` (``27.0``, ``1,000``, ``\\$18``, ``4.5e33``, ``4.5 \\times 10^{33}``,
``-3/4``, ``50\\%``, ``18.``, ``x = 10,\\!080``, ``9 (apples)``; anything else is None) and
``numbers_equal``. A number written with a decimal point or an exponent stands for every value
that rounds to it (``0.6666666667``: 2/3); an integer (``1538832``, also ``27.0``) and a fraction
are exact. Two numbers are equal when their values are, or when one of them is the other rounded
to the precision it is written to and they differ by at most a relative 1e-5. So ``1538833`` is
not ``1538832``, ``\\frac{21021}{312500000}`` (0.0000672672) is not ``.0000672``, and
``0.6666666667`` is ``2/3``. A percentage also reads as its fraction (``50%`` == ``50`` == ``0.5``).
``sympy_number`` turns math-verify's reading of an answer into such a number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

_REL_TOL = Fraction(1, 10**5)
_MAX_NUMBER_CHARS = 80
_TEXT_MACRO_RE = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mbox)\s*\{([^{}]*)\}")
_DELIMS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_NUMBER_RE = re.compile(
    r"(?P<num>[-+]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
    r"|[-+]?\d+/\d+)(?P<pct>%)?"
)
# "4.5 \times 10^{33}" -> "4.5e33"
_SCIENTIFIC_RE = re.compile(r"(\d)\s*(?:\\times|\\cdot|\*)\s*10\s*\^\s*\{?\s*([-+]?\d+)\s*\}?$")
# "x = 10,080", "n=5": a single-letter variable named before the value
_ASSIGNMENT_RE = re.compile(r"^[A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?\s*=\s*")
# A unit: words of 2+ letters ("apples", "sq. inches", "first-aid kits") or a degree sign
_UNIT_RE = re.compile(r"(?:\s+\(?(?P<word>[A-Za-z][A-Za-z .'\-]*[A-Za-z.])\)?|\s*\^\{?\\circ\}?)$")
# Words that look like units but are maths: "2 pi" must not compare equal to "2".
_NOT_UNITS = frozenset({"pi", "sqrt", "log", "ln", "sin", "cos", "tan", "exp"})


@dataclass(frozen=True)
class Number:
    """A plain number: its digits as written (separators dropped), exact value, the size of
    its last written digit (None when exact: integers and fractions), whether it was a
    percentage, and whether the value is sympy's 15-digit approximation of an irrational."""

    digits: str
    value: Fraction
    ulp: Fraction | None
    percent: bool
    approximate: bool = False

    def readings(self) -> list[tuple[Fraction, Fraction | None]]:
        """(value, last-digit size) pairs this number may mean: a percentage is also /100."""
        plain = [(self.value, self.ulp)]
        if not self.percent:
            return plain
        return plain + [(self.value / 100, None if self.ulp is None else self.ulp / 100)]


def strip_delimiters(text: str) -> str:
    text = text.strip()
    for left, right in _DELIMS:
        if len(text) > len(left) + len(right) and text.startswith(left) and text.endswith(right):
            return text[len(left) : -len(right)].strip()
    return text


def bare(text: str) -> str:
    """``text`` without outer math delimiters and with ``\\text{...}``-like wrappers opened."""
    return strip_delimiters(_TEXT_MACRO_RE.sub(r" \1 ", text))


def _last_digit(digits: str, value: Fraction) -> Fraction | None:
    if "/" in digits:
        return None
    mantissa, _, exponent = digits.lower().partition("e")
    if not exponent and value.denominator == 1:
        return None  # an integer, also written "27.0" or "18.", is exact
    decimals = len(mantissa.partition(".")[2])
    return Fraction(10) ** (int(exponent or 0) - decimals)


def plain_number(text: str) -> Number | None:
    """The number ``text`` is, when it is a plain number (see the module docstring), else None."""
    if len(text) > _MAX_NUMBER_CHARS:  # also keeps the unit regex off long, costly inputs
        return None
    text = re.sub(r"\{,\}|\\,", ",", bare(text))  # LaTeX thousands separators
    text = re.sub(r"\\[$! ]", "", text).replace("\\%", "%").strip().lstrip("$").strip()
    text = _ASSIGNMENT_RE.sub("", text, count=1)
    unit = _UNIT_RE.search(text)
    if unit and not (unit.group("word") and unit.group("word").split()[0].lower() in _NOT_UNITS):
        text = text[: unit.start()].strip()
    text = _SCIENTIFIC_RE.sub(r"\1e\2", text)
    match = _NUMBER_RE.fullmatch(text)
    if match is None:
        return None
    digits = re.sub(r"\.(?=e|$)", "", match.group("num").replace(",", "").lower())  # "18." -> 18
    try:
        value = Fraction(digits)
    except (ValueError, ZeroDivisionError):
        return None
    return Number(digits, value, _last_digit(digits, value), match.group("pct") is not None)


def numbers_equal(a: Number, b: Number) -> bool:
    """Whether two numbers are equal (see the module docstring)."""
    for x, x_digit in a.readings():
        for y, y_digit in b.readings():
            if x == y:
                return True
            gap = abs(x - y)
            rounded = any(d is not None and gap <= d / 2 for d in (x_digit, y_digit))
            if rounded and gap <= _REL_TOL * max(abs(x), abs(y)):
                return True
    return False


def sympy_number(expr: Any, text: str) -> Number | None:
    """``expr`` (math-verify's reading of ``text``) as a Number when it is one real number:
    ``text``'s own digits when it is a plain number, else sympy's exact rational or its value
    to 15 significant digits (``\\sqrt{2}/2``)."""
    import sympy

    if not isinstance(expr, sympy.Expr) or expr.free_symbols or not expr.is_number:
        return None
    written = plain_number(text)
    if written is not None:
        return written
    if expr.is_Rational:
        value = Fraction(int(expr.p), int(expr.q))
        return Number(str(value), value, None, False)
    try:
        approx = Fraction(format(float(expr.evalf(20)), ".15g"))
    except (TypeError, ValueError, OverflowError):
        return None  # complex, infinite or not a number at all
    return Number(str(approx), approx, None, False, approximate=True)
