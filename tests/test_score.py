"""The score stage: rescoring generations shards and plain CoT files with exact entropy."""

import json

import numpy as np
import pytest
import torch
from conftest import tiny_generate

from stepprune.backends.entropy import entropy_reference
from stepprune.schema import GENERATIONS
from stepprune.shards import read_table
from stepprune.stages.score import ScoreConfig, run


def test_rescoring_exact_shards_reproduces_them(tiny_model_dir, tmp_path):
    gen = tiny_generate(tiny_model_dir, tmp_path, 3)
    out = tmp_path / "scored"
    summary = run(
        ScoreConfig(
            input=str(gen), out=str(out), model=str(tiny_model_dir), dtype="float32", chunk=5
        )
    )
    assert summary["rows"] == 3 and summary["entropy_sources"] == ["rescored"]
    before = {r["problem_id"]: r for r in read_table(gen, GENERATIONS).to_pylist()}
    for row in read_table(out, GENERATIONS).to_pylist():
        ref = before[row["problem_id"]]
        assert np.abs(np.subtract(row["token_entropies"], ref["token_entropies"])).max() < 1e-4
        for a, b in zip(row["steps"], ref["steps"], strict=True):
            assert a["entropy_sum"] == pytest.approx(b["entropy_sum"], abs=1e-3)
        assert json.loads(row["sampling"])["rescored_by"] == str(tiny_model_dir)
    # Rerun: nothing left to do, nothing duplicated.
    assert run(ScoreConfig(input=str(gen), out=str(out), model=str(tiny_model_dir)))["rows"] == 3


def test_scoring_a_plain_cot_file(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cots = tmp_path / "cots.jsonl"
    rows = [
        {
            "q": "Tom has 3 apples and buys 5 more.",
            "a": "8",
            "cot": "3 + 5 = 8.\n\nCheck: 8 - 5 = 3.\n\nSo the answer is \\boxed{8}.",
        },
        {"q": "Divide 12 by 4.", "a": "3", "cot": "12 / 4 = 3.\n\nThe final answer is 4."},
    ]
    cots.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "scored"
    run(
        ScoreConfig(
            input=str(cots),
            out=str(out),
            model=str(tiny_model_dir),
            dtype="float32",
            problem_field="q",
            answer_field="a",
            completion_field="cot",
        )
    )
    got = sorted(read_table(out, GENERATIONS).to_pylist(), key=lambda r: r["problem_id"])
    assert [r["completion"] for r in got] == [r["cot"] for r in rows]
    assert [r["correct"] for r in got] == [True, False]
    assert [r["n_steps"] for r in got] == [2, 1]
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    for r in got:
        ids = r["prompt_token_ids"] + r["token_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, len(r["prompt_token_ids"]) - 1 : -1]
        assert (
            np.abs(np.array(r["token_entropies"]) - entropy_reference(logits.numpy())).max() < 1e-4
        )
        assert r["token_ids"] == tok(r["completion"], add_special_tokens=False)["input_ids"]


def test_missing_completion_field_names_file_and_line(tiny_model_dir, tmp_path):
    cots = tmp_path / "cots.jsonl"
    cots.write_text(
        '{"problem": "1?", "answer": "1", "completion": "x"}\n{"problem": "2?", "answer": "2"}\n'
    )
    with pytest.raises(ValueError, match=r"cots.jsonl:2: field 'completion'"):
        run(ScoreConfig(input=str(cots), out=str(tmp_path / "o"), model=str(tiny_model_dir)))


def test_read_field_takes_the_same_files_as_problem_loading(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from stepprune.data.load import ProblemFileError
    from stepprune.stages.score import read_field

    rows = [{"q": "1+1?", "cot": "a\n\nb"}, {"q": "2+2?", "cot": "c"}]
    array = tmp_path / "cots.json"
    array.write_text(json.dumps(rows))
    lines = tmp_path / "cots.jsonl"
    lines.write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = tmp_path / "cots.parquet"
    pq.write_table(pa.Table.from_pylist(rows), table)
    for path in (array, lines, table):
        assert read_field(path, "cot") == ["a\n\nb", "c"]
    array.write_text(json.dumps([rows[0], "not a row"]))
    with pytest.raises(ProblemFileError, match="cots.json:2"):
        read_field(array, "cot")
    with pytest.raises(ValueError, match=r"cots.jsonl:1: field 'answer': missing or empty"):
        read_field(lines, "answer")


def _no_model_loads(monkeypatch):
    """Make loading a scoring model fail loudly: a refusal must come before it."""

    def never(*args, **kwargs):
        raise AssertionError("the scoring model was loaded")

    monkeypatch.setattr("stepprune.backends.rescore.Rescorer", never)


def test_an_out_of_another_models_rows_is_refused_before_loading(
    tiny_model_dir, tmp_path, monkeypatch
):
    import shutil

    gen = tiny_generate(tiny_model_dir, tmp_path, 2)
    out = tmp_path / "scored"
    run(ScoreConfig(input=str(gen), out=str(out), model=str(tiny_model_dir), dtype="float32"))
    before = sorted(p.name for p in out.iterdir())
    other = shutil.copytree(tiny_model_dir, tmp_path / "other")  # same weights, another model
    _no_model_loads(monkeypatch)
    # Every key is in out already: without the check this "scores" nothing and succeeds.
    message = rf"{out}: holds rows scored by {tiny_model_dir}, not by {other}; use another --out"
    with pytest.raises(ValueError, match=message):
        run(ScoreConfig(input=str(gen), out=str(out), model=str(other), dtype="float32"))
    assert sorted(p.name for p in out.iterdir()) == before


def test_inputs_are_checked_before_the_model_loads_and_no_out_is_left(
    tiny_model_dir, tmp_path, monkeypatch
):
    import pyarrow as pa
    import pyarrow.parquet as pq

    cots = tmp_path / "cots.jsonl"
    cots.write_text('{"problem": "1?", "answer": "1", "completion": "x"}\n{"problem": "2?"}\n')
    gen = tiny_generate(tiny_model_dir, tmp_path, 2)
    pq.write_table(pa.table({"x": [1]}), gen / "zz-not-generations.parquet")
    broken = tmp_path / "broken"  # a config but no weights: it fails while loading
    broken.mkdir()
    (broken / "config.json").write_bytes((tiny_model_dir / "config.json").read_bytes())
    out = tmp_path / "o"
    with monkeypatch.context() as patch:
        _no_model_loads(patch)
        with pytest.raises(ValueError, match=r"cots.jsonl:2: .*answer"):
            run(ScoreConfig(input=str(cots), out=str(out), model=str(tiny_model_dir)))
        assert not out.exists()
        with pytest.raises(ValueError, match=r"zz-not-generations.parquet: .*generations"):
            run(ScoreConfig(input=str(gen), out=str(out), model=str(tiny_model_dir)))
        assert not out.exists()
    with pytest.raises(OSError):
        run(
            ScoreConfig(
                input=str(gen / "part-000of001-00000.parquet"), out=str(out), model=str(broken)
            )
        )
    assert not out.exists()
