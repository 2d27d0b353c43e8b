"""Answer extraction and answer checking, shared by evaluation and GRPO rewards.

Owns ``extract_answer``, ``verify`` / ``grade`` and the bounding of math-verify's run time in
any thread or process. ``verify(pred, gold)`` decides by the first rule that applies:

1. Numbers: both sides plain numbers (``27.0``, ``1,000``, ``\\$18``, ``4.5e33``, ``-3/4``,
   ``50\\%``), optionally followed by a unit that is ignored (words of 2+ letters, optionally
   in parentheses: ``9 (apples)``, ``5.4 \\text{ cents}``; or ``^\\circ``). Equal within a
   relative 1e-5; a percentage also matches its fraction (``50%`` == ``50`` == ``0.5``).
2. Words: the gold is a word answer (only letters, digits and plain punctuation, with a word of
   2+ letters or "a.m."/"p.m.": ASDiv's ``Mrs. Hilt``, ``Yes``, ``3:30 p.m.``). Compared
   ignoring case, spaces, punctuation, ``\\text{}`` wrappers and a leading article.
3. math-verify on both sides (wrapped in ``\\boxed{}`` unless already delimited), its own
   signal-based timeouts off, the whole call bounded by ``timeout`` seconds: a SIGALRM timer on
   the main thread, a killable helper process elsewhere. A timeout counts as wrong.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from fractions import Fraction

from stepprune.data.bounded import run_bounded

logger = logging.getLogger(__name__)

_BOX_RE = re.compile(r"\\(?:boxed|fbox|framebox)(?![A-Za-z])")
_FINAL_RE = re.compile(r"final\s+answer\s*(?:is|:)\s*:?(?P<rest>[^\n]*)", re.IGNORECASE)
_ANSWER_RE = re.compile(r"\banswer\s*(?:is|:)\s*:?(?P<rest>[^\n]*)", re.IGNORECASE)
_HASH_RE = re.compile(r"####(?P<rest>[^\n]*)")
_LAST_NUMBER_RE = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?")
_TEXT_MACRO_RE = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mbox)\s*\{([^{}]*)\}")
_DELIMS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_NUMBER_RE = re.compile(
    r"(?P<num>[-+]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?"
    r"|[-+]?\d+/\d+)(?P<pct>%)?"
)
_UNIT_RE = re.compile(r"(?:\s+\(?(?P<word>[A-Za-z][A-Za-z .]*[A-Za-z.])\)?|\s*\^\{?\\circ\}?)$")
# Words that look like units but are maths: "2 pi" must not compare equal to "2".
_NOT_UNITS = frozenset({"pi", "sqrt", "log", "ln", "sin", "cos", "tan", "exp"})
_WORD_ANSWER_RE = re.compile(r"[A-Za-z0-9 .,'’:!?\-]+")
_REL_TOL = 1e-5
_MAX_NUMBER_CHARS = 80


@dataclass(frozen=True)
class Grade:
    extracted: str | None
    correct: bool


def _brace_group(text: str, start: int) -> str | None:
    """Content of the ``{...}`` group opening at ``text[start]``; None if never closed."""
    depth, i = 0, start
    while i < len(text):
        if text[i] == "\\":
            i += 2  # an escaped brace (\{ or \}) never opens or closes a group
            continue
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start + 1 : i]
        i += 1
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` / ``\\boxed x`` / ``\\fbox{...}``."""
    found = None
    for match in _BOX_RE.finditer(text):
        rest = text[match.end() :]
        body = rest.lstrip()
        if body.startswith("{"):
            content = _brace_group(body, 0)
        else:  # "\boxed 5": the token after the space
            token = re.match(r"[^\s$]+", body) if len(body) < len(rest) else None
            content = token.group(0) if token else None
        if content and content.strip():
            found = content.strip()
    return found


def _strip_delimiters(text: str) -> str:
    text = text.strip()
    for left, right in _DELIMS:
        if len(text) > len(left) + len(right) and text.startswith(left) and text.endswith(right):
            return text[len(left) : -len(right)].strip()
    return text


def _marker_value(rest: str) -> str | None:
    """The answer written after a marker such as "Answer:", up to the end of its sentence."""
    rest = rest.strip().strip("*").strip()
    delimited = re.match(r"\$\$?(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", rest)
    if delimited:
        value = next(g for g in delimited.groups() if g is not None)
    else:
        # Cut at the sentence's full stop but keep decimal points such as "3.5".
        value = re.split(r"\.(?:\s|$)", rest, maxsplit=1)[0]
    value = value.strip().strip("*").rstrip(".,;:!").strip()
    return value or None


def extract_answer(text: str, *, last_number: bool = True) -> str | None:
    """The final answer in a completion, or None.

    Tried in order, the first that yields a non-empty answer wins:

    1. the last complete ``\\boxed{...}`` (nested braces handled), ``\\boxed x`` or ``\\fbox{...}``;
    2. the last "final answer is X" / "final answer: X";
    3. the last "#### X" (GSM8K style);
    4. the last "answer is X" / "Answer: X";
    5. if ``last_number``, the last number in the text (``1,000``, ``-3.5``, ``3/4``).

    For 2-4, X is a ``$...$`` / ``\\(...\\)`` group right after the marker, else the rest of the
    line up to its first full stop, without trailing punctuation or markdown bold.
    """
    if not text:
        return None
    boxed = last_boxed(text)
    if boxed:
        return boxed
    for pattern in (_FINAL_RE, _HASH_RE, _ANSWER_RE):
        for match in reversed(list(pattern.finditer(text))):
            value = _marker_value(match.group("rest"))
            if value:
                return value
    if last_number:
        numbers = _LAST_NUMBER_RE.findall(text)
        if numbers:
            return numbers[-1]
    return None


def _bare(text: str) -> str:
    """``text`` without outer math delimiters and with ``\\text{...}``-like wrappers opened."""
    return _strip_delimiters(_TEXT_MACRO_RE.sub(r" \1 ", text))


def _plain_number(text: str) -> tuple[str, Fraction, bool] | None:
    """(digits as written, value, is_percent) when ``text`` is a plain number, else None."""
    if len(text) > _MAX_NUMBER_CHARS:  # also keeps the unit regex off long, costly inputs
        return None
    text = re.sub(r"\{,\}|\\,", ",", _bare(text))  # LaTeX thousands separators
    text = re.sub(r"\\[$! ]", "", text).replace("\\%", "%").strip().lstrip("$").strip()
    unit = _UNIT_RE.search(text)
    if unit and not (unit.group("word") and unit.group("word").split()[0].lower() in _NOT_UNITS):
        text = text[: unit.start()].strip()
    match = _NUMBER_RE.fullmatch(text)
    if match is None:
        return None
    digits = match.group("num").replace(",", "")
    try:
        return digits, Fraction(digits), match.group("pct") is not None
    except (ValueError, ZeroDivisionError):
        return None


def _numbers_equal(a: tuple[str, Fraction, bool], b: tuple[str, Fraction, bool]) -> bool:
    readings_a, readings_b = ([n[1], n[1] / 100] if n[2] else [n[1]] for n in (a, b))
    return any(
        x == y or math.isclose(x, y, rel_tol=_REL_TOL, abs_tol=1e-12)
        for x in readings_a
        for y in readings_b
    )


def _is_word_answer(gold: str) -> bool:
    text = _bare(gold).strip()
    return bool(_WORD_ANSWER_RE.fullmatch(text) and re.search(r"[A-Za-z]{2}|\b[ap]\.m\b", text))


def _text_key(text: str) -> str:
    text = _bare(text).replace("$", "").strip().lower()
    text = re.sub(r"^(?:the|a|an)\s+", "", text)
    return re.sub(r"[^a-z0-9]", "", text)


def answer_kind(answer: str) -> str:
    """Which path of ``verify`` a gold answer takes: "number", "text" or "math"."""
    if _plain_number(answer) is not None:
        return "number"
    return "text" if _is_word_answer(answer) else "math"


def latex_for_math_verify(answer: str) -> str:
    """The string ``verify`` hands to math-verify's ``parse`` for ``answer``."""
    number = _plain_number(answer)
    if number is not None:
        digits, _, percent = number
        mantissa, _, exponent = digits.lower().partition("e")
        text = f"{mantissa}\\times 10^{{{int(exponent)}}}" if exponent else digits
        suffix = "\\%" if percent else ""
        return f"\\boxed{{{text}{suffix}}}"
    text = _strip_delimiters(answer)
    if "$" in text or "\\boxed" in text:
        return text
    return f"\\boxed{{{text}}}"


def _not_timeout_notice(record: logging.LogRecord) -> bool:
    """Drops math-verify's warning that its timeouts are off: ``verify`` bounds time itself."""
    return not str(record.msg).startswith("Timeout is disabled")


def _math_verify_equal(pred: str, gold: str) -> bool:
    """math-verify's verdict, with its signal-based timeouts off (callers bound the time)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse
    from math_verify import verify as mv_verify

    for name in ("math_verify.parser", "math_verify.grader"):
        logging.getLogger(name).addFilter(_not_timeout_notice)  # idempotent
    config = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    gold_parsed = parse(latex_for_math_verify(gold), config, parsing_timeout=None)
    pred_parsed = parse(latex_for_math_verify(pred), config, parsing_timeout=None)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(mv_verify(gold_parsed, pred_parsed, timeout_seconds=None))


def verify(pred: str | None, gold: str, *, timeout: float = 5.0) -> bool:
    """Whether ``pred`` equals ``gold`` (see the module docstring for the rules)."""
    if pred is None or not str(pred).strip() or not str(gold).strip():
        return False
    pred, gold = str(pred), str(gold)
    pred_number, gold_number = _plain_number(pred), _plain_number(gold)
    if pred_number is not None and gold_number is not None:
        return _numbers_equal(pred_number, gold_number)
    if _is_word_answer(gold):
        return _text_key(pred) == _text_key(gold)
    try:
        return bool(
            run_bounded(
                _math_verify_equal, (pred, gold), timeout, preload=("math_verify", __name__)
            )
        )
    except TimeoutError:
        logger.debug("math-verify timed out (%gs): pred=%.200r gold=%.200r", timeout, pred, gold)
    except Exception:
        logger.debug("math-verify failed: pred=%.200r gold=%.200r", pred, gold, exc_info=True)
    return False


def grade(completion: str, gold: str, *, timeout: float = 5.0) -> Grade:
    """Extract the final answer from ``completion`` and verify it against ``gold``."""
    extracted = extract_answer(completion)
    return Grade(extracted=extracted, correct=verify(extracted, gold, timeout=timeout))


_MENTION_RE = re.compile(
    r"-?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?%?|-?\.\d+%?"
)
_FRAC_RE = re.compile(r"\\[dt]?frac\s*\{\s*(-?\d+(?:\.\d+)?)\s*\}\s*\{\s*(\d+(?:\.\d+)?)\s*\}")


def states_value(text: str, answer: str | None) -> bool:
    """Whether ``text`` states the value ``answer`` in the grader's normalised form.

    A numeric answer is stated when any number written in the text (``1,000``, ``-3.5``, ``1/2``,
    ``\\frac{1}{2}``, ``50%``, a ``\\boxed{}`` content) equals it as ``verify`` compares numbers
    (``0.5`` states ``1/2``). Another answer is stated when its normalised text (case, spaces,
    punctuation and ``\\text{}`` wrappers ignored) occurs in the normalised text.
    """
    if not answer or not str(answer).strip() or not text:
        return False
    target = _plain_number(str(answer))
    if target is None:
        key = _text_key(str(answer))
        return bool(key) and key in _text_key(text)
    text = _FRAC_RE.sub(lambda m: f" {m.group(1)}/{m.group(2)} ", text)
    for match in _MENTION_RE.finditer(text):
        found = _plain_number(re.sub(r"\s+", "", match.group(0)))
        if found is not None and _numbers_equal(found, target):
            return True
    return False
