"""Tests for stepprune.data.grading: extraction, the three verify paths, thread safety, limits,
and agreement with the hand-labelled cases of tests/data/grading_cases.jsonl."""

from __future__ import annotations

import json
import logging
import multiprocessing
import pickle
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import pytest

from stepprune.data import grading
from stepprune.data.grading import Grade, answer_kind, extract_answer, grade, verify
from stepprune.data.load import builtin_names

CASES = Path(__file__).with_name("data") / "grading_cases.jsonl"
# Golds of the built-in sets that math-verify reads as a fragment of themselves.
E_MIX = "\\frac{1}{3} E_{1}+\\frac{2}{3} E_{2}"  # minerva-268, read as 2/3


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
        # issue #22: a trailing point, escaped dollars, titles, Minerva's closing sentence
        ("so \\boxed{18.}", "18."),
        ("The answer is $\\$32,\\!348$.", "\\$32,\\!348"),
        ("The answer is Mrs. Hilt.", "Mrs. Hilt"),
        ("The answer is 11:55 p.m. on 24 December 2014.", "11:55 p.m. on 24 December 2014"),
        ("Final Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.", "\\frac{1}{2}"),
        ("Final Answer: The final answer is 12. I hope it is correct.", "12"),
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
        ("5:45", "5:45", True),  # ASDiv clock times compare as written ...
        ("1/9", "5:45", False),  # ... not as the ratio 5/45
        ("3 : 4", "3:4", True),
    ],
)
def test_verify(pred, gold, expected):
    assert verify(pred, gold) is expected


def test_numeric_tolerance_is_small():
    assert verify("3.333333", "10/3")
    assert not verify("3.33", "10/3")
    assert not verify("1000.5", "1000")


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        # integers are exact: a relative 1e-5 accepted these from 100,000 up
        ("1538833", "1538832", False),
        ("100001", "100000", False),
        ("1201566", "1201565.0", False),  # SVAMP writes integers as floats
        ("1,201,565", "1201565.0", True),
        ("1538832.4", "1538832", False),
        ("27.0001", "27.0", False),
        ("1538833.25", "1538832.25", False),  # decimals are exact to their last digit too
        ("0.3333333334", "0.3333333333", False),
        # ... which leaves rounding, scientific notation and percentages alone
        ("0.6666666667", "2/3", True),
        ("4.5e33", "4.5e33", True),
        ("4.50001e33", "4.5e33", True),
        ("4.5 \\times 10^{33}", "4.5e33", True),
        ("4.6 \\times 10^{33}", "4.5e33", False),
        ("4500000000000000000000000000000000", "4.5e33", True),
        ("50\\%", "0.5", True),
        ("0.5", "50%", True),
        ("62.5\\%", "62.5%", True),
        # math-verify rounds to 6 decimals: a fraction 0.1% off a small decimal passed
        ("\\frac{21021}{312500000}", ".0000672", False),
        ("\\frac{21}{312500}", ".0000672", True),
        ("0.0000014", "\\frac{1}{1000000}", False),
        ("\\sqrt{2}/2", "0.7071", True),
        ("\\sqrt{2}/2", "0.71", False),
        # golds math-verify reads as a fragment: the fragment no longer passes
        ("\\frac{2}{3}", E_MIX, False),
        ("\\frac{1}{3}E_1+\\frac{2}{3}E_2", E_MIX, True),
        ("\\frac{37}{4}", "\\frac{37}{4} m", False),  # "m" is a variable, read as metres
        ("\\frac{37}{4}m", "\\frac{37}{4} m", True),
        ("\\frac{37 m}{4}", "\\frac{37}{4} m", True),
        ("\\frac{1}{m}", "\\frac{1}{m} t", False),
        ("6", "6m", False),
        ("6 m", "6m", True),
        ("221", "$221,$8$", False),  # OlympiadBench: only the first $...$ group was read
        ("221, 8", "$221,$8$", True),
        ("5 m", "5", True),  # a unit on a prediction is still ignored
        # wrong-rejects
        ("18.", "18", True),
        ("\\$32,\\!348", "\\$32,\\!348", True),
        ("32348", "\\$32,\\!348", True),
        ("x = 10,\\!080", "10,\\!080", True),
        ("x = 10,\\!080", "10080", True),
    ],
)
def test_issue_22_verify(pred, gold, expected):
    assert verify(pred, gold) is expected


@pytest.mark.parametrize(
    ("completion", "gold"),
    [
        ("so the answer is $\\boxed{18.}$", "18"),
        ("The total is $\\$32,\\!348$.\nThe answer is $\\$32,\\!348$.", "\\$32,\\!348"),
        ("The answer is Mrs. Hilt.", "Mrs. Hilt"),
        (
            "Final Answer: The final answer is $\\frac{37}{4}m$. I hope it is correct.",
            "\\frac{37}{4} m",
        ),
        ("Final Answer: The final answer is Mrs. Hilt. I hope it is correct.", "Mrs. Hilt"),
        ("Final Answer: The final answer is 1e-8. I hope it is correct.", "1e-8"),
        ("The answer is $x = 10,\\!080$.", "10,\\!080"),
    ],
)
def test_issue_22_wrong_rejects(completion, gold):
    assert grade(completion, gold).correct


def _cases() -> list[dict]:
    return [json.loads(line) for line in CASES.read_text(encoding="utf-8").splitlines()]


def test_grading_cases_table_covers_every_set():
    rows = _cases()
    assert len(rows) >= 300
    assert {r["source"] for r in rows} == set(builtin_names())
    assert {type(r["label"]) for r in rows} == {bool}
    kinds = Counter((r["kind"].split("_")[0], r["label"]) for r in rows)
    assert set(kinds) == {("format", True), ("rewrite", True), ("miss", False)}


def test_grader_agrees_with_every_labelled_case():
    """Labels come from how each prediction was made (tests/data/make_grading_cases.py), never
    from a grader; every one must hold."""
    wrong = [
        (r["kind"], r["gold"], r["pred"], r["label"])
        for r in _cases()
        if grade(r["pred"], r["gold"]).correct is not r["label"]
    ]
    assert wrong == []


@pytest.mark.parametrize(
    ("gold", "kind"),
    [
        ("27.0", "number"),
        ("9 (apples)", "number"),
        ("x = 10,\\!080", "number"),
        ("Mrs. Hilt", "text"),
        ("5:45", "text"),
        ("\\frac{1}{2}", "math"),
    ],
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
