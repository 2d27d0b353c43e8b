"""Bad input gets one clear error naming the file, row and field, before anything is written."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stepprune.config import ConfigError, build_config
from stepprune.schema import GENERATIONS, SchemaError
from stepprune.stages.prune import PruneConfig, run
from stepprune.synthetic import synthetic_table


def _shard(path, n=6, start=0, **columns):
    """A generations shard; ``columns`` replace whole columns (nullable, so nulls fit)."""
    table = synthetic_table(n, steps=4, tokens_per_step=3, seed=start, start=start)
    for name, values in columns.items():
        i = table.schema.get_field_index(name)
        array = pa.array(values, type=values.type if isinstance(values, pa.Array) else None)
        field = pa.field(name, array.type, nullable=True)
        table = table.set_column(i, field, array)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.replace_schema_metadata(GENERATIONS.with_metadata().metadata), path)
    return path


def test_config_values_must_have_the_field_type(tmp_path):
    for bad, message in [
        (dict(kappa="abc"), "kappa='abc' is not a number"),
        (dict(correct_only="maybe"), "correct_only='maybe' is not true/false"),
        (dict(seed=1.5), "seed=1.5 is not an integer"),
        (dict(max_tokens="many"), "max_tokens='many' is not an integer or null"),
    ]:
        with pytest.raises(ConfigError, match=message):
            build_config(PruneConfig, **bad)
    from stepprune.stages.eval import EvalConfig

    with pytest.raises(ConfigError, match=r"strategies='low' is not a list"):
        build_config(EvalConfig, strategies="low")
    recipe = tmp_path / "prune_bad.yaml"
    recipe.write_text("kappa: [0.5]\n")
    with pytest.raises(ConfigError, match=r"prune_bad.yaml: kappa=\[0.5\] is not a number"):
        build_config(PruneConfig, recipe)
    # What YAML and the CLI hand over legitimately: ints for floats, paths for strings.
    cfg = build_config(PruneConfig, kappa=1, out=tmp_path, max_tokens=None)
    assert cfg.kappa == 1 and cfg.out == tmp_path


def test_null_and_mistyped_columns_name_file_row_and_column(tmp_path):
    gen = tmp_path / "gen"
    _shard(gen / "a.parquet")
    _shard(gen / "b.parquet", start=10, n_thinking_tokens=[5, 5, None, 5, 5, 5])
    with pytest.raises(SchemaError, match=r"b.parquet: row 2: column 'n_thinking_tokens' is null"):
        run(PruneConfig(input=str(gen), out=str(tmp_path / "o1")))
    assert not (tmp_path / "o1").exists()
    _shard(gen / "b.parquet", start=10, correct=pa.array(["yes"] * 6))
    with pytest.raises(SchemaError, match=r"b.parquet: column 'correct' is string, expected bool"):
        run(PruneConfig(input=str(gen), out=str(tmp_path / "o2")))
    (gen / "b.parquet").write_bytes((gen / "a.parquet").read_bytes()[:500])
    with pytest.raises(SchemaError, match=r"b.parquet: not a readable Parquet file"):
        run(PruneConfig(input=str(gen), out=str(tmp_path / "o3")))


def test_a_trajectory_twice_is_refused(tmp_path):
    gen = tmp_path / "gen"
    _shard(gen / "a.parquet")
    _shard(gen / "b.parquet", start=4)  # rows p4, p5 are also in a.parquet
    with pytest.raises(ValueError, match=r"b.parquet: row 0: .*\('p4', 0\) appears more than"):
        run(PruneConfig(input=str(gen), out=str(tmp_path / "o"), correct_only=False))
    assert not (tmp_path / "o").exists()


def test_output_may_not_hold_the_input(tmp_path):
    gen = _shard(tmp_path / "gen" / "a.parquet").parent
    for out in (gen, tmp_path):
        with pytest.raises(ValueError, match="holds the input"):
            run(PruneConfig(input=str(gen), out=str(out), overwrite=True))
    assert (gen / "a.parquet").exists()


def test_score_and_eval_outputs_may_not_hold_their_input(tmp_path):
    from stepprune.stages import eval as evaluate
    from stepprune.stages import score

    gen = _shard(tmp_path / "gen" / "a.parquet").parent
    model = str(tmp_path / "never-loaded")
    for out in (gen, tmp_path):  # score would count the input's rows as scored already
        with pytest.raises(ValueError, match=rf"--out {out} holds the input {gen}"):
            score.run(score.ScoreConfig(input=str(gen), out=str(out), model=model))
        with pytest.raises(ValueError, match=rf"--out {out} holds the input {gen}"):
            evaluate.run(evaluate.EvalConfig(input=str(gen), out=str(out), model=model))
    assert sorted(p.name for p in gen.iterdir()) == ["a.parquet"]


def test_model_paths_that_are_not_models(tmp_path):
    from stepprune.models import resolve_model

    with pytest.raises(FileNotFoundError, match=r"model /no/such/dir: does not exist"):
        resolve_model("/no/such/dir")
    with pytest.raises(FileNotFoundError, match="is not a model directory"):
        resolve_model(str(tmp_path))
    assert resolve_model("org/name") == "org/name"  # a hub id is left to transformers


def test_generate_refuses_bad_templates_empty_sets_and_mixed_resumes(tmp_path, tiny_model_dir):
    from stepprune.stages.generate import GenerateConfig
    from stepprune.stages.generate import run as generate

    with pytest.raises(ValueError, match=r"prompt_template 'Solve \{question\}'.*\{problem\}"):
        GenerateConfig(prompt_template="Solve {question}")
    with pytest.raises(ValueError, match=r"step_pattern '\(': not a regular expression"):
        GenerateConfig(step_pattern="(")
    problems = tmp_path / "p.jsonl"
    problems.write_text("")
    base = dict(model=str(tiny_model_dir), out=str(tmp_path / "gen"), dtype="float32")
    with pytest.raises(ValueError, match=r"p.jsonl: no problems"):
        generate(GenerateConfig(problems=str(problems), **base))
    problems.write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n")
    generate(GenerateConfig(problems=str(problems), max_new_tokens=4, temperature=0.6, **base))
    with pytest.raises(ValueError, match=r"other settings \(temperature: 0.6 -> 1.5\)"):
        generate(GenerateConfig(problems=str(problems), max_new_tokens=4, temperature=1.5, **base))
    more = generate(
        GenerateConfig(
            problems=str(problems), max_new_tokens=4, temperature=0.6, n_samples=2, **base
        )
    )
    assert more["rows"] == 2  # more samples per problem is a legitimate resume
    # Rows sampled by an older hf backend (no hf_generation in their record) were cut to
    # transformers' default top_k: resuming would mix them with untruncated samples.
    for shard in (tmp_path / "gen").glob("*.parquet"):
        table = pq.read_table(shard)
        records = [json.loads(r) for r in table["sampling"].to_pylist()]
        old = [json.dumps({k: v for k, v in r.items() if k != "hf_generation"}) for r in records]
        col = table.schema.get_field_index("sampling")
        pq.write_table(table.set_column(col, table.schema.field(col), pa.array(old)), shard)
    with pytest.raises(ValueError, match=r"top-k-truncated rows -> the untruncated"):
        generate(
            GenerateConfig(
                problems=str(problems), max_new_tokens=4, temperature=0.6, n_samples=3, **base
            )
        )


def test_grpo_checks_its_template_before_replacing_out(tmp_path, tiny_model_dir):
    from stepprune.stages.grpo import GRPOStageConfig
    from stepprune.stages.grpo import run as grpo

    problems = tmp_path / "p.jsonl"
    problems.write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n")
    out = tmp_path / "grpo"
    out.mkdir()
    (out / "keep.txt").write_text("earlier work")
    cfg = GRPOStageConfig(
        problems=str(problems),
        model=str(tiny_model_dir),
        out=str(out),
        overwrite=True,
        prompt_template="Solve {question}",
        grpo_args={"use_cpu": True, "report_to": "none"},
    )
    with pytest.raises(ValueError, match="prompt_template"):
        grpo(cfg)
    assert (out / "keep.txt").read_text() == "earlier work"


def test_counts_out_of_range(tmp_path):
    from stepprune.stages.eval import EvalConfig
    from stepprune.stages.score import ScoreConfig

    with pytest.raises(ValueError, match="limit must be >= 1"):
        EvalConfig(limit=-1)
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        ScoreConfig(chunk=0)
    gen = _shard(tmp_path / "gen" / "a.parquet").parent
    with pytest.raises(ValueError, match="max_tokens must be >= 1"):
        run(PruneConfig(input=str(gen), out=str(tmp_path / "o"), max_tokens=-5))


def test_eval_refuses_a_trajectory_twice(tmp_path, tiny_model_dir):
    from stepprune.stages.eval import EvalConfig
    from stepprune.stages.eval import run as evaluate

    gen = tmp_path / "gen"
    _shard(gen / "a.parquet", problem_id=pa.array(["p0", "p1", "p2", "p3", "p1", "p5"]))
    cfg = EvalConfig(
        input=str(gen), out=str(tmp_path / "eval"), model=str(tiny_model_dir), kappas=[0.5]
    )
    with pytest.raises(ValueError, match=r"a.parquet: row 1: .*\('p1', 0\) appears more than"):
        evaluate(cfg)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--temperature", "-1"], r"temperature must be > 0 when sampling, got -1.0"),
        (["--temperature", "0"], r"temperature must be > 0 when sampling"),
        (["--set", "top_p=0"], r"top_p must be in \(0, 1\], got 0"),
        (["--set", "top_p=1.5"], r"top_p must be in \(0, 1\], got 1.5"),
    ],
)
def test_sampling_values_are_checked_before_the_model_loads(tmp_path, flags, message):
    import subprocess
    import sys

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "stepprune.cli", "generate", "--problems", "mawps_singleop"]
    cmd += ["--model", str(tmp_path / "never-loaded"), "--out", str(out), *flags]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert __import__("re").search(message, proc.stderr), proc.stderr[-500:]
    assert not out.exists()
    greedy = cmd[: cmd.index("--out") + 2] + ["--greedy", "--temperature", "0", "--limit", "0"]
    assert "temperature" not in subprocess.run(greedy, capture_output=True, text=True).stderr


def _with_steps(table, row: int, edit):
    """``table`` with row ``row``'s steps replaced by ``edit(steps)``."""
    steps = table.column("steps").to_pylist()
    steps[row] = edit([dict(s) for s in steps[row]])
    i = table.schema.get_field_index("steps")
    return table.set_column(
        i, table.schema.field(i), pa.array(steps, type=table.schema.field(i).type)
    )


def _shift(step, **delta):
    return {**step, **{k: step[k] + v for k, v in delta.items()}}


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (
            lambda s: s[:-1] + [_shift(s[-1], char_end=500)],
            "step 3: char_end lies beyond the thinking",
        ),
        (
            lambda s: [s[0], _shift(s[1], char_start=-3)] + s[2:],
            "step 1: char span overlaps the step before",
        ),
        (
            lambda s: [s[0], {**s[1], "char_end": s[1]["char_start"] - 1}] + s[2:],
            "step 1: char span is empty or runs backwards",
        ),
        (
            lambda s: s[:2] + [_shift(s[2], token_start=1)] + s[3:],
            "step 2: token span leaves a gap or overlaps",
        ),
        (
            lambda s: s[:-1] + [_shift(s[-1], token_end=40, n_tokens=40)],
            "step 3: the last step does not end at n_thinking_tokens",
        ),
    ],
)
def test_corrupted_step_spans_are_refused_with_file_row_and_step(tmp_path, edit, reason):
    from stepprune.cot.spans import check_step_spans
    from stepprune.synthetic import synthetic_table

    table = synthetic_table(6, steps=4, tokens_per_step=3, seed=0)
    check_step_spans(table, "clean")  # what generate writes passes
    path = tmp_path / "gen" / "part-0.parquet"
    path.parent.mkdir()
    bad = _with_steps(table, 2, edit)
    pq.write_table(bad.replace_schema_metadata(GENERATIONS.with_metadata().metadata), path)
    out = tmp_path / "out"
    with pytest.raises(SchemaError, match=rf"part-0.parquet: row 2: {reason}"):
        run(PruneConfig(input=str(path.parent), out=str(out), correct_only=False))
    assert not out.exists()
