"""``stepprune config STAGE`` and ``--version``: the printed config is a recipe that builds the
stage's default config, with every field and the meanings written beside the fields."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import yaml

from stepprune.config import build_config
from stepprune.stages import CONFIGS, config_class

CLI = [sys.executable, "-m", "stepprune.cli"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True)


def test_version_matches_the_package():
    from stepprune import __version__

    done = _cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"stepprune {__version__}"


@pytest.mark.parametrize("stage", sorted(CONFIGS))
def test_the_printed_config_is_a_recipe_of_the_defaults(stage, tmp_path):
    from stepprune.config_docs import describe

    text = describe(config_class(stage))
    recipe = yaml.safe_load(text)
    cls = config_class(stage)
    assert list(recipe) == [f.name for f in dataclasses.fields(cls)]  # every field, in order
    path = tmp_path / f"{stage}.yaml"
    path.write_text(text)
    assert build_config(cls, path) == build_config(cls)  # the recipe builds the defaults


def test_meanings_come_from_the_field_comments():
    done = _cli("config", "grpo")
    assert done.returncode == 0, done.stderr
    lines = {line.split(":", 1)[0]: line for line in done.stdout.splitlines()}
    assert lines["method"].endswith(
        "# se, eg, ceeh(-ea), kimi, shorterbetter, thinkprune (rl/methods.py)"
    )
    assert lines["lora"].endswith("# peft.LoraConfig kwargs; None: full fine-tuning")
    bad = _cli("config", "nope")
    assert bad.returncode == 1 and bad.stderr.strip().startswith("error: unknown stage 'nope'")


def test_dotted_set_merges_into_the_recipes_mapping(tmp_path):
    from stepprune.stages.sft import SFTStageConfig

    recipe = tmp_path / "sft_x.yaml"
    recipe.write_text("sft_args: {learning_rate: 1.0e-4, num_train_epochs: 2}\nlora: {r: 8}\n")
    cfg = build_config(
        SFTStageConfig,
        recipe,
        **{"sft_args.learning_rate": "2e-5", "lora.lora_alpha": 16, "lora.r": 4},
    )
    # merged key by key, the recipe's other keys kept; 2e-5 typed as TRL's field expects
    assert cfg.sft_args == {"learning_rate": 2e-5, "num_train_epochs": 2}
    assert cfg.lora == {"r": 4, "lora_alpha": 16}


def test_dotted_set_reaches_nested_stage_overrides_and_refuses_non_mappings():
    from stepprune.config import ConfigError
    from stepprune.stages.grpo import GRPOStageConfig

    key = "stages.eg-compress.grpo_args.max_steps"
    cfg = build_config(GRPOStageConfig, method="eg", **{key: 5})
    assert cfg.stages == {"eg-compress": {"grpo_args": {"max_steps": 5}}}
    with pytest.raises(ConfigError, match="method is str, not a mapping"):
        build_config(GRPOStageConfig, **{"method.x": 1})
    with pytest.raises(ConfigError, match=r"unknown options \['nope'\].*known: .*method"):
        build_config(GRPOStageConfig, **{"nope.x": 1})


def test_dotted_set_through_the_cli(tmp_path):
    out = tmp_path / "p"
    done = _cli(
        *("prune", "-i", str(tmp_path / "missing"), "--out", str(out)),
        *("--set", "nonexistent-key.a=1"),
    )
    assert done.returncode == 1
    assert "unknown options ['nonexistent_key']" in done.stderr and "known: " in done.stderr


def test_a_run_mostly_cut_at_max_new_tokens_warns():
    from stepprune.cot.summary import format_summary

    summary = {
        "rows": 10,
        "accuracy": 0.1,
        "mean_tokens": 64.0,
        "mean_thinking_tokens": 60.0,
        "mean_steps": 3.0,
        "mean_skip_ratio": 0.0,
        "rows_with_skip": 0,
        "token_entropy": {"mean": 1.0, "p10": 0.1, "p50": 0.9, "p90": 2.0},
        "entropy_sources": ["exact"],
    }
    half = format_summary({**summary, "truncated": 5})
    assert "warning" not in half  # exactly half: no warning
    most = format_summary({**summary, "truncated": 6}).splitlines()[-1]
    assert most.startswith("warning: 6 of 10 rows (60%) stopped at max_new_tokens")


def test_each_stage_hints_the_next_command(tmp_path):
    from stepprune.cli import NEXT

    assert set(NEXT) == {"generate", "score", "prune", "sft", "grpo"}
    gen = tmp_path / "gen"
    problems = tmp_path / "p.jsonl"
    problems.write_text('{"id": "a", "problem": "What is 2 + 3?", "answer": "5"}\n')
    done = _cli(
        *("generate", "--problems", str(problems), "--out", str(gen)),
        *("--max-new-tokens", "4", "--dtype", "float32", "--set", "id_field=id"),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == f"next: {NEXT['generate'].format(out=gen)}"


def test_every_help_shows_the_config_defaults():
    import click
    import typer

    from stepprune.cli import app
    from stepprune.config import field_default
    from stepprune.stages import CONFIGS, config_class

    group = typer.main.get_command(app)
    ctx = click.Context(group)
    checked = 0
    for stage in CONFIGS:
        command = group.get_command(ctx, stage)
        fields = {f.name: field_default(f) for f in dataclasses.fields(config_class(stage))}
        aliases = {"model": "models", "benchmark": "benchmarks", "baseline": "baselines"}
        for param in command.params:
            name = aliases.get(param.name, param.name) if stage == "bench" else param.name
            value = fields.get(name)
            if name in fields and value not in (None, "", [], {}):
                shown = value if isinstance(value, str) else json.dumps(value)
                assert param.show_default == shown, (stage, param.name)
                checked += 1
    assert checked >= 40
    done = subprocess.run(
        [*CLI, "generate", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    line = next(x for x in done.stdout.splitlines() if "--temperature" in x)
    assert "[default: (0.6)]" in line
