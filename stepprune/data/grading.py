"""Answer extraction and answer checking, shared by evaluation and GRPO rewards.

Owns ``extract_answer``, ``verify`` / ``grade`` and the bounding of math-verify's run time in
any thread or process. ``verify(pred, gold)`` decides by the first rule that applies:

1. Numbers: both sides plain numbers (``27.0``, ``1,000``, ``\\$18``, ``18.``, ``4.5e33``,
   ``4.5 \\times 10^{33}``, ``-3/4``, ``50\\%``, ``x = 10,\\!080``), optionally followed by a
   unit that is ignored (words of 2+ letters, optionally in parentheses: ``9 (apples)``,
   ``13 first-aid kits``, ``5.4 \\text{ cents}``; or ``^\\circ``). Integers (also ``27.0``)
   and fractions are exact: ``1538833`` is not ``1538832``. A number with decimals or an
   exponent also matches a value that rounds to it at its last digit, if they differ by at most
   a relative 1e-5 (``0.6666666667`` == ``2/3``, ``4.50001e33`` == ``4.5e33``). A percentage
   also matches its fraction (``50%`` == ``50`` == ``0.5``). See ``stepprune.data.answer_numbers``.
2. Words and clock times: the gold is a word answer (only letters, digits and plain punctuation,
   with a word of 2+ letters or "a.m."/"p.m.": ASDiv's ``Mrs. Hilt``, ``Yes``, ``3:30 p.m.``),
   compared ignoring case, spaces, punctuation, ``\\text{}`` wrappers and a leading article; or
   digits joined by colons (ASDiv's times ``5:45`` and ratios ``3:4``), compared as written
   (math-verify would read ``5:45`` as 1/9).
3. math-verify on both sides (wrapped in ``\\boxed{}`` unless already delimited), its own
   signal-based timeouts off, the whole call bounded by ``timeout`` seconds: a SIGALRM timer on
   the main thread, a killable helper process elsewhere. A timeout counts as wrong. Its
   readings are checked first (``stepprune.data.math_forms``): a reading that drops a letter of
   its text (``\\frac{37}{4} m`` read as 37/4, "m" stripped as metres) is redone with units
   kept; a gold still not read whole (``\\frac{1}{3} E_{1}+\\frac{2}{3} E_{2}`` read as 2/3,
   or not read at all) is compared with the prediction as normalised LaTeX text. Two readings
   that are single real numbers are compared by rule 1, not by math-verify's rounding to 6
   decimals (which calls ``\\frac{21021}{312500000}`` equal to ``.0000672``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from stepprune.data.answer_numbers import bare, numbers_equal, plain_number, strip_delimiters
from stepprune.data.bounded import run_bounded
from stepprune.data.math_forms import math_verify_equal

logger = logging.getLogger(__name__)

_BOX_RE = re.compile(r"\\(?:boxed|fbox|framebox)(?![A-Za-z])")
# The rest of a line up to a later "final answer": Minerva writes "Final Answer: The final
# answer is $X$. I hope it is correct."
_FINAL_RE = re.compile(
    r"final\s+answer\s*(?:is|:)\s*:?(?P<rest>(?:(?!final\s+answer)[^\n])*)", re.IGNORECASE
)
_ANSWER_RE = re.compile(r"\banswer\s*(?:is|:)\s*:?(?P<rest>[^\n]*)", re.IGNORECASE)
_HASH_RE = re.compile(r"####(?P<rest>[^\n]*)")
_LAST_NUMBER_RE = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?")
# A $...$ group may hold escaped dollars: "$\$32,\!348$".
_DELIMITED_RE = re.compile(r"\$\$?((?:\\.|[^\\$])+)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]")
# A full stop ends the answer at the end of the line or before a word that does not start in
# lower case ("3:30 p.m. on Monday" goes on).
_SENTENCE_END_RE = re.compile(r"\.(?=\s*$|\s+[^a-z\s])")
_TITLE_RE = re.compile(r"\b(?:Mr|Mrs|Ms|Dr|St|Jr|Sr|Prof|Mt)$")
_WORD_ANSWER_RE = re.compile(r"[A-Za-z0-9 .,'’:!?\-]+")
_COLON_ANSWER_RE = re.compile(r"\d+(?:\s*:\s*\d+)+")


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


def _first_sentence(text: str) -> str:
    """``text`` up to its first sentence-ending full stop: not a decimal point ("3.5"), a title
    ("Mrs. Hilt") or one followed by a lower-case word ("p.m. on")."""
    for stop in _SENTENCE_END_RE.finditer(text):
        if not _TITLE_RE.search(text[: stop.start()]):
            return text[: stop.start()]
    return text


def _marker_value(rest: str) -> str | None:
    """The answer written after a marker such as "Answer:", up to the end of its sentence."""
    rest = rest.strip().strip("*").strip()
    delimited = _DELIMITED_RE.match(rest)
    if delimited:
        value = next(g for g in delimited.groups() if g is not None)
    else:
        value = _first_sentence(rest)
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

    For 2-4, X is a ``$...$`` / ``\\(...\\)`` group right after the marker (``\\$`` inside is
    kept), else the rest of the line up to the full stop that ends its sentence (not that of
    "Mrs." or one before a lower-case word), without trailing punctuation or markdown bold.
    Minerva's "Final Answer: The final answer is $X$." yields X.
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


def _is_word_answer(gold: str) -> bool:
    text = bare(gold).strip()
    return bool(_WORD_ANSWER_RE.fullmatch(text) and re.search(r"[A-Za-z]{2}|\b[ap]\.m\b", text))


def _text_key(text: str) -> str:
    text = bare(text).replace("$", "").strip().lower()
    text = re.sub(r"^(?:the|a|an)\s+", "", text)
    return re.sub(r"[^a-z0-9]", "", text)


def _colon_key(text: str) -> str | None:
    """``5:45`` / ``3 : 4`` without spaces; None unless ``text`` is digits joined by colons."""
    text = re.sub(
        r"\\colon|\\!|\\,|\s", lambda m: ":" if m.group(0) == "\\colon" else "", bare(text)
    )
    return text if _COLON_ANSWER_RE.fullmatch(text) else None


def answer_kind(answer: str) -> str:
    """Which path of ``verify`` a gold answer takes: "number", "text" or "math"."""
    if plain_number(answer) is not None:
        return "number"
    if _colon_key(answer) is not None or _is_word_answer(answer):
        return "text"
    return "math"


def latex_for_math_verify(answer: str) -> str:
    """The string ``verify`` hands to math-verify's ``parse`` for ``answer``."""
    number = plain_number(answer)
    if number is not None:
        mantissa, _, exponent = number.digits.lower().partition("e")
        text = f"{mantissa}\\times 10^{{{int(exponent)}}}" if exponent else number.digits
        suffix = "\\%" if number.percent else ""
        return f"\\boxed{{{text}{suffix}}}"
    text = strip_delimiters(answer)
    if "$" in text or "\\boxed" in text:
        return text
    return f"\\boxed{{{text}}}"


def _math_verify_equal(pred: str, gold: str) -> bool:
    """Rule 3 (runs inside ``verify``'s time bound)."""
    return math_verify_equal(pred, gold, latex_for_math_verify(pred), latex_for_math_verify(gold))


def verify(pred: str | None, gold: str, *, timeout: float = 5.0) -> bool:
    """Whether ``pred`` equals ``gold`` (see the module docstring for the rules)."""
    if pred is None or not str(pred).strip() or not str(gold).strip():
        return False
    pred, gold = str(pred), str(gold)
    pred_number, gold_number = plain_number(pred), plain_number(gold)
    if pred_number is not None and gold_number is not None:
        return numbers_equal(pred_number, gold_number)
    gold_colon = _colon_key(gold)
    if gold_colon is not None:
        return _colon_key(pred) == gold_colon
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
    target = plain_number(str(answer))
    if target is None:
        key = _text_key(str(answer))
        return bool(key) and key in _text_key(text)
    text = _FRAC_RE.sub(lambda m: f" {m.group(1)}/{m.group(2)} ", text)
    for match in _MENTION_RE.finditer(text):
        found = plain_number(re.sub(r"\s+", "", match.group(0)))
        if found is not None and numbers_equal(found, target):
            return True
    return False
