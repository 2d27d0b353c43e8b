"""Tests for stepprune.data.load: real benchmark files, gold answers the grader accepts, bad input,
Parquet / JSON input and the hub branch (``datasets.load_dataset`` is always monkeypatched)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from math_verify import parse
from sympy import Basic, MatrixBase

from stepprune.data import grading
from stepprune.data import load as data
from stepprune.data.load import KNOWN_UNPARSEABLE, Problem, ProblemFileError, load_problems

DATA_DIR = Path(
    os.environ.get("STEPPRUNE_DATA_DIR") or Path(__file__).parents[2] / "shared/data/math"
)
needs_data = pytest.mark.skipif(not DATA_DIR.is_dir(), reason=f"no benchmark data in {DATA_DIR}")

# The shared README gives MAWPS as 394/599/507/561, which is `wc -l`: those four files lack a
# final newline, and each holds one row more (395/600/508/562 JSON objects).
ROWS = {
    "gsm8k": 1319,
    "gsm8k_train": 7473,
    "math500": 500,
    "aime24": 30,
    "amc23": 40,
    "minerva": 272,
    "olympiadbench": 675,
    "svamp": 1000,
    "asdiv": 2215,
    "mawps_addsub": 395,
    "mawps_multiarith": 600,
    "mawps_singleeq": 508,
    "mawps_singleop": 562,
}


def _raw_rows(filename: str) -> list[dict]:
    with (DATA_DIR / filename).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _rejection(answer: str) -> str | None:
    """Why the grader cannot accept ``answer`` as a gold answer, or None if it can."""
    if not grading.verify(answer, answer):
        return "verify(gold, gold) is False"
    if grading.answer_kind(answer) != "math":
        return None  # the numeric or word path decides without math-verify
    parsed = parse(grading.latex_for_math_verify(answer), parsing_timeout=10)
    if not any(isinstance(item, Basic | MatrixBase) for item in parsed):
        return f"math-verify parses it only as {parsed!r}"
    return None


@pytest.fixture(scope="module")
def loaded() -> dict[str, list[Problem]]:
    return {name: load_problems(name, data_dir=DATA_DIR) for name in data.builtin_names()}


def test_builtin_names_cover_the_readme():
    assert sorted(data.builtin_names()) == sorted(ROWS)


@needs_data
@pytest.mark.parametrize("name", sorted(ROWS))
def test_builtin_row_counts_and_ids(loaded, name):
    problems = loaded[name]
    assert len(problems) == ROWS[name]
    assert len({p.id for p in problems}) == len(problems)
    assert all(p.source == name and p.id.startswith(f"{name}-") for p in problems)
    assert all(p.problem.strip() and p.answer.strip() for p in problems)


@needs_data
@pytest.mark.parametrize("name", sorted(ROWS))
def test_every_gold_answer_is_gradeable(loaded, name):
    known = KNOWN_UNPARSEABLE.get(name, {})
    failures = [
        f"{p.id}: {p.answer!r}: {why}"
        for p in loaded[name]
        if p.id not in known and (why := _rejection(p.answer)) is not None
    ]
    assert failures == []


@needs_data
@pytest.mark.parametrize("name", sorted(KNOWN_UNPARSEABLE))
def test_known_unparseable_list_is_small_and_not_stale(loaded, name):
    by_id = {p.id: p for p in loaded[name]}
    known = KNOWN_UNPARSEABLE[name]
    assert len(known) <= 0.01 * len(by_id)
    for pid, reason in known.items():
        assert reason.strip()
        assert pid in by_id, f"{pid} is not a problem of {name}"
        assert _rejection(by_id[pid].answer) is not None, f"{pid} is gradeable now: drop it"


@needs_data
@pytest.mark.parametrize(
    ("name", "pid", "answer"),
    [
        ("gsm8k", "gsm8k-0", "18"),
        ("gsm8k", "gsm8k-146", "2125"),  # "#### 2,125"
        ("gsm8k_train", "gsm8k_train-0", "72"),
        ("math500", "math500-test/precalculus/807.json", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("aime24", "aime24-60", "204"),
        ("aime24", "aime24-67", "25"),  # "025"
        ("amc23", "amc23-0", "27.0"),
        ("minerva", "minerva-0", "1.6"),  # \boxed{1.6} \mathrm{~cm}
        ("minerva", "minerva-1", "4.5e33"),
        ("minerva", "minerva-38", "-1/3"),  # "-1./3"
        ("minerva", "minerva-5", "\\arcsin(10/13)"),  # "np.arcsin(10/13)"
        ("olympiadbench", "olympiadbench-1606", "2"),  # ['2']
        ("olympiadbench", "olympiadbench-1664", "69, 84"),  # ['$69$,$84$']
        ("olympiadbench", "olympiadbench-1618", "(1,8,19), (2,7,13), (4,5,7)"),
        ("svamp", "svamp-chal-777", "145.0"),
        ("asdiv", "asdiv-0", "9"),  # "9 (apples)"
        ("asdiv", "asdiv-29", "Mrs. Hilt"),
        ("asdiv", "asdiv-165", "3:30 p.m."),
        ("asdiv", "asdiv-867", "The 60th caller"),  # "The 60th caller."
        ("mawps_addsub", "mawps_addsub-0", "43.0"),
        ("mawps_multiarith", "mawps_multiarith-0", "39"),
        ("mawps_singleeq", "mawps_singleeq-0", "43.0"),
        ("mawps_singleop", "mawps_singleop-0", "14.0"),
    ],
)
def test_gold_spot_checks(loaded, name, pid, answer):
    assert {p.id: p.answer for p in loaded[name]}[pid] == answer


@needs_data
def test_problem_text_spot_checks(loaded):
    svamp = _raw_rows("svamp_test.jsonl")[0]
    assert loaded["svamp"][0].problem == svamp["Body"] + " " + svamp["Question"]
    asdiv = _raw_rows("asdiv_test.jsonl")[0]
    assert loaded["asdiv"][0].problem == f"{asdiv['body']} {asdiv['question']}"
    assert loaded["gsm8k"][0].problem.startswith("Janet\u2019s ducks lay 16 eggs per day.")
    assert loaded["mawps_singleop"][0].problem == _raw_rows("mawps_singleop_test.jsonl")[0]["input"]


@needs_data
def test_limit_and_env_data_dir(monkeypatch):
    monkeypatch.setenv("STEPPRUNE_DATA_DIR", str(DATA_DIR))
    assert [p.id for p in load_problems("aime24", limit=2)] == ["aime24-60", "aime24-61"]


def test_resolve_data_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("STEPPRUNE_DATA_DIR", raising=False)
    assert data.resolve_data_dir() is None
    monkeypatch.setenv("STEPPRUNE_DATA_DIR", str(tmp_path / "env"))
    assert data.resolve_data_dir() == tmp_path / "env"
    assert data.resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"


def _write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = json.dumps({"problem": "1+1?", "answer": "2"})


@pytest.mark.parametrize(
    ("bad_line", "field"),
    [
        ('{"problem": "1+1?", "answer": ', "<json>"),
        ('["not", "an", "object"]', "<json>"),
        (json.dumps({"answer": "2"}), "problem"),
        (json.dumps({"problem": "   ", "answer": "2"}), "problem"),
        (json.dumps({"problem": "2+2?"}), "answer"),
        (json.dumps({"problem": "2+2?", "answer": ""}), "answer"),
        (json.dumps({"problem": "2+2?", "answer": None}), "answer"),
        (json.dumps({"problem": "2+2?", "answer": True}), "answer"),
    ],
)
def test_bad_rows_raise_with_file_line_and_field(tmp_path, bad_line, field):
    path = _write_jsonl(tmp_path / "bad.jsonl", [GOOD, bad_line, GOOD])
    with pytest.raises(ProblemFileError) as info:
        load_problems(str(path))
    message = str(info.value)
    assert message.startswith(f"{path}:2: field '{field}': ")
    assert "bad.jsonl" in message and info.value.line == 2 and info.value.field == field
    problems, skipped = data.load_problems_report(str(path), skip_bad=True)
    assert [p.id for p in problems] == ["bad-0", "bad-2"]  # ids keep their row index
    assert len(skipped) == 1 and skipped[0] == message


def test_undecodable_line_costs_only_that_line(tmp_path):
    path = tmp_path / "enc.jsonl"
    path.write_bytes(GOOD.encode() + b"\n" + b'{"problem": "\xff", "answer": "1"}\n')
    with pytest.raises(ProblemFileError, match=r"enc\.jsonl:2: field '<json>': malformed"):
        load_problems(str(path))
    assert len(load_problems(str(path), skip_bad=True)) == 1


def test_duplicate_ids_name_both_lines(tmp_path, caplog):
    rows = [{"qid": q, "problem": f"p{i}", "answer": str(i)} for i, q in enumerate("abca")]
    path = _write_jsonl(tmp_path / "dups.jsonl", [json.dumps(r) for r in rows])
    with pytest.raises(ProblemFileError, match=r"dups\.jsonl:4: field 'qid': .*lines 1 and 4"):
        load_problems(str(path), id_field="qid")
    with caplog.at_level(logging.WARNING, logger="stepprune.data.load"):
        problems = load_problems(str(path), id_field="qid", skip_bad=True)
    assert [p.id for p in problems] == ["a", "b", "c"]
    assert "skipped 1 bad rows of" in caplog.text and "dups.jsonl" in caplog.text


def test_builtin_gold_normalisation_errors_name_the_field(tmp_path):
    _write_jsonl(
        tmp_path / "gsm8k_test.jsonl",
        [json.dumps({"question": "q", "answer": "no marker"})],
    )
    with pytest.raises(ProblemFileError, match=r"gsm8k_test\.jsonl:1: field 'answer': .*####"):
        load_problems("gsm8k", data_dir=tmp_path)


def test_parquet_with_custom_fields(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {"uid": ["u1", "u2"], "question": ["How many?", "Half of 1?"], "gold": ["1,000", "$0.5$"]}
    )
    path = tmp_path / "mine.parquet"
    pq.write_table(table, path)
    problems = load_problems(
        str(path), problem_field="question", answer_field="gold", id_field="uid"
    )
    assert problems == [
        Problem(id="u1", source="mine", problem="How many?", answer="1,000"),
        Problem(id="u2", source="mine", problem="Half of 1?", answer="0.5"),
    ]
    with pytest.raises(ProblemFileError, match=r"mine\.parquet:1: field 'answer': missing"):
        load_problems(str(path), problem_field="question")


def test_json_array_and_numeric_answers(tmp_path):
    path = tmp_path / "arr.json"
    path.write_text(json.dumps([{"problem": "a", "answer": 27.0}, {"problem": "b", "answer": 3}]))
    assert [(p.id, p.answer) for p in load_problems(str(path))] == [
        ("arr-0", "27.0"),
        ("arr-1", "3"),
    ]


def test_unknown_source_and_builtin_overrides(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a built-in set"):
        load_problems(str(tmp_path / "missing.jsonl"))
    with pytest.raises(ValueError, match="fixed fields"):
        load_problems("gsm8k", problem_field="text")


def test_hub_source_uses_load_dataset(monkeypatch):
    calls = []

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return [{"q": "What is 2+2?", "a": 4}, {"q": "", "a": 1}]

    monkeypatch.setattr("datasets.load_dataset", fake_load_dataset)
    problems, skipped = data.load_problems_report(
        "hub:someone/set:cfg@train", problem_field="q", answer_field="a", skip_bad=True
    )
    assert calls == [(("someone/set", "cfg"), {"split": "train"})]
    assert problems == [Problem("someone/set-0", "someone/set", "What is 2+2?", "4")]
    assert skipped == ["hub:someone/set@train:2: field 'q': empty problem text"]
    with pytest.raises(ValueError, match="contradicts"):
        load_problems("hub:someone/set@train", split="test")


def test_builtin_falls_back_to_hub(monkeypatch, tmp_path, caplog):
    calls = []

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return [{"question": "Q?", "answer": "work\n#### 1,234"}]

    monkeypatch.setattr("datasets.load_dataset", fake_load_dataset)
    with caplog.at_level(logging.WARNING, logger="stepprune.data.load"):
        problems = load_problems("gsm8k", data_dir=tmp_path)
    assert calls == [(("openai/gsm8k", "main"), {"split": "test"})]
    assert problems == [Problem("gsm8k-0", "gsm8k", "Q?", "1234")]
    assert "hub:openai/gsm8k@test" in caplog.text


def test_builtin_without_data_or_network_says_what_to_set(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr("datasets.load_dataset", offline)
    monkeypatch.delenv("STEPPRUNE_DATA_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match=r"--data-dir or STEPPRUNE_DATA_DIR") as info:
        load_problems("math500")
    assert "HuggingFaceH4/MATH-500" in str(info.value)


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_windows_saved_file_with_bom_and_crlf_reads_like_a_plain_one(tmp_path, suffix):
    rows = [
        {"problem": "Tom has 3 apples. How many?", "answer": "3"},
        {"problem": "1+1?", "answer": "2"},
    ]
    plain = tmp_path / f"plain{suffix}"
    plain.write_text("".join(json.dumps(r) + "\n" for r in rows))
    windows = tmp_path / f"windows{suffix}"
    windows.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r) + "\r\n" for r in rows).encode())
    got = data.load_problems(str(windows))
    want = data.load_problems(str(plain))
    assert [(p.problem, p.answer) for p in got] == [(p.problem, p.answer) for p in want]
    assert len(got) == 2


def test_another_encoding_still_gets_the_clear_error(tmp_path):
    path = tmp_path / "utf16.jsonl"
    path.write_bytes(json.dumps({"problem": "1+1?", "answer": "2"}).encode("utf-16"))
    with pytest.raises(data.ProblemFileError, match=r"utf16.jsonl:1: field '<json>': malformed"):
        data.load_problems(str(path))
