"""Tests for stepprune.data.grading: extraction, the three verify paths, thread safety, limits."""

from __future__ import annotations

import logging
import multiprocessing
import pickle
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest

from stepprune.data import grading
from stepprune.data.grading import Grade, answer_kind, extract_answer, grade, verify


def _sleepy(pred: str, gold: str) -> bool:
    """Stand-in for math-verify that never finishes in time (top-level so helpers can unpickle)."""
    time.sleep(30)
    return True


def _in_thread(fn, *args, **kwargs):
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn, *args, **kwargs).result()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so $\\boxed{18}$.", "18"),
        ("\\boxed{\\frac{\\sqrt{3}}{\\{2\\}}}", "\\frac{\\sqrt{3}}{\\{2\\}}"),  # nested braces
        (
            "first \\boxed{1} then \\boxed{\\left(2, \\frac{1}{2}\\right)}",
            "\\left(2, \\frac{1}{2}\\right)",
        ),
        ("\\fbox{42} is it", "42"),
        ("\\framebox{204} minutes", "204"),
        ("thus \\boxed 7 holds", "7"),
        ("\\boxed{5} but then \\boxed{6", "5"),  # an unclosed last box does not count
        ("\\boxed{} and \\boxed{3}", "3"),
        ("The final answer is $\\frac{3}{4}$. I hope it is correct.", "\\frac{3}{4}"),
        ("Final Answer: 12 apples.\nThe answer is 13.", "12 apples"),
        ("blah\n#### 1,000", "1,000"),
        ("Answer: 42 apples.", "42 apples"),
        ("**Answer:** 3.5", "3.5"),
        ("The answer is \\(x^2\\).", "x^2"),
        ("I got 3, then -4.5 and finally 1,200 eggs", "1,200"),
        ("so 3/4 of them", "3/4"),
        ("no digits here", None),
        ("", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_extract_answer_fallback_order():
    both = "Answer: 1\n#### 2\nThe final answer is 3"
    assert extract_answer(both) == "3"
    assert extract_answer("Answer: 1\n#### 2") == "2"
    assert extract_answer("\\boxed{9}\nThe final answer is 3") == "9"
    assert extract_answer("we get 5 and 6", last_number=False) is None
    assert extract_answer("Answer: .\nso 4") == "4"  # an empty marker falls through


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ("27.0", "27", True),  # AMC / SVAMP floats
        ("27", "27.0", True),
        ("1,000", "1000", True),  # GSM8K thousands separators
        ("2125", "2,125", True),
        ("\\$18.00", "18", True),
        ("025", "25", True),  # AIME leading zeros
        ("9", "9 (apples)", True),  # ASDiv units
        ("9 apples", "9", True),
        ("5.4 \\text{ cents}", "5.4", True),
        ("45^\\circ", "45", True),
        ("50\\%", "50", True),
        ("0.5", "50%", True),
        ("0.6666666667", "2/3", True),  # MAWPS rounding
        ("4.5 \\times 10^{33}", "4.5e33", True),  # Minerva scientific notation
        ("\\frac{1}{2}", "0.5", True),
        ("\\dfrac{1}{2}", "\\frac12", True),
        ("\\sqrt{2}/2", "\\frac{\\sqrt2}{2}", True),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})", True),  # MATH-500 tuple
        ("(1, 2)", "(1,2)", True),
        ("(2, 1)", "(1, 2)", False),  # tuples are ordered
        ("2, 1", "1, 2", True),  # OlympiadBench lists of answers are unordered
        ("\\frac{1}{2}, \\frac{32}{9}", "\\frac{32}{9}, \\frac{1}{2}", True),
        ("[1, 2)", "[1,2)", True),  # intervals
        ("(1,2]", "[1,2)", False),
        ("x=2", "2", True),
        ("-1/3", "-(1/3)", True),
        ("5:6", "5:6", True),
        ("\\text{Evelyn}", "\\text{Evelyn}", True),
        ("evelyn", "\\text{Evelyn}", True),
        ("mrs hilt", "Mrs. Hilt", True),  # ASDiv word answers
        ("Yes", "No", False),
        ("3:30 pm", "3:30 p.m.", True),
        ("John", "Jhon", False),  # math-verify would call these equal products of symbols
        ("2 pi", "2", False),  # "pi" is not a unit
        ("17", "18", False),
        ("\\frac{1}{3}", "0.5", False),
        (None, "18", False),
        ("", "18", False),
        ("18", "", False),
    ],
)
def test_verify(pred, gold, expected):
    assert verify(pred, gold) is expected


def test_numeric_tolerance_is_small():
    assert verify("3.333333", "10/3")
    assert not verify("3.33", "10/3")
    assert not verify("1000.5", "1000")


@pytest.mark.parametrize(
    ("gold", "kind"),
    [("27.0", "number"), ("9 (apples)", "number"), ("Mrs. Hilt", "text"), ("\\frac{1}{2}", "math")],
)
def test_answer_kind(gold, kind):
    assert answer_kind(gold) == kind


def test_grade():
    assert grade("... so the total is \\boxed{1,000}.", "1000") == Grade("1,000", True)
    assert grade("I think it is 17", "18") == Grade("17", False)
    assert grade("no idea", "18") == Grade(None, False)
    assert pickle.loads(pickle.dumps(Grade("1", True))) == Grade("1", True)


THREAD_CASES = [
    ("\\frac{1}{2}", "0.5", True),
    ("\\sqrt{2}/2", "\\frac{\\sqrt2}{2}", True),
    ("(1, 2)", "(1,2)", True),
    ("\\frac{1}{3}", "0.5", False),
    ("27.0", "27", True),
    ("x^2+2x+1", "(x+1)^2", True),
    ("[1, 2)", "(1,2]", False),
    ("Mrs Hilt", "Mrs. Hilt", True),
] * 3


def test_verify_from_eight_threads(caplog):
    caplog.set_level(logging.DEBUG, logger="stepprune.data.grading")
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda case: verify(case[0], case[1]), THREAD_CASES))
    assert results == [expected for _, _, expected in THREAD_CASES]
    assert not [r for r in caplog.records if "failed" in r.getMessage()]


def test_main_thread_timeout_is_bounded_and_restores_alarm(monkeypatch, caplog):
    caplog.set_level(logging.DEBUG, logger="stepprune.data.grading")
    monkeypatch.setattr(grading, "_math_verify_equal", _sleepy)
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *_: fired.append(True))
    signal.setitimer(signal.ITIMER_REAL, 20)  # somebody else's pending timer
    try:
        started = time.monotonic()
        assert verify("\\frac{1}{2}", "\\frac{1}{3}", timeout=1) is False
        assert 0.9 < time.monotonic() - started < 3
        assert any("timed out" in r.getMessage() for r in caplog.records)
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 15 < remaining <= 20
        assert not fired
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_worker_thread_timeout_kills_helper_and_recovers(monkeypatch, caplog):
    caplog.set_level(logging.DEBUG, logger="stepprune.data.grading")
    assert _in_thread(verify, "\\frac{2}{4}", "0.5")  # start the helper outside the clock
    monkeypatch.setattr(grading, "_math_verify_equal", _sleepy)
    started = time.monotonic()
    assert _in_thread(verify, "\\frac{1}{2}", "\\frac{1}{3}", timeout=1) is False
    assert 0.9 < time.monotonic() - started < 5
    assert any("timed out" in r.getMessage() for r in caplog.records)
    monkeypatch.undo()
    assert _in_thread(verify, "\\frac{3}{6}", "0.5")  # the killed helper is restarted


def test_verify_in_spawned_worker_process():
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        assert list(pool.map(verify, ["\\frac{1}{2}", "0.4"], ["0.5", "0.5"])) == [True, False]


def test_alarm_path_only_on_main_thread():
    assert threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGALRM)
    assert verify("\\frac{1}{2}", "0.5")
    assert signal.getsignal(signal.SIGALRM) is before
