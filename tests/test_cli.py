"""The CLI: fast help without torch, honest refusals, recipes that load, clear input errors."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from stepprune.config import ConfigError, build_config
from stepprune.stages import config_class

REPO = Path(__file__).resolve().parents[1]


def test_help_does_not_import_heavy_libraries():
    """What keeps --help instant is not importing them; a wall-clock bound would be a timed test."""
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from stepprune.cli import app\n"
        "for args in (['--help'], ['eval', '--help'], ['sft', '--help'], ['grpo', '--help'],\n"
        "             ['generate', '--help'], ['score', '--help'], ['bench', '--help']):\n"
        "    r = CliRunner().invoke(app, args)\n"
        "    assert r.exit_code == 0, r.output\n"
        "assert 'generate' in CliRunner().invoke(app, ['--help']).output\n"
        "heavy = ('torch', 'transformers', 'vllm', 'datasets', 'trl', 'peft', 'polars', 'ray')\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "recipe", sorted((REPO / "pipelines").glob("*.yaml")), ids=lambda p: p.name
)
def test_every_recipe_loads(recipe):
    cls = config_class(recipe.name.split("_")[0])
    cfg = build_config(cls, recipe)
    import yaml

    for key, value in yaml.safe_load(recipe.read_text()).items():
        assert getattr(cfg, key) == value


def test_flags_override_recipe_and_unknown_keys_fail(tmp_path):
    recipe = REPO / "pipelines" / "generate_smollm2_cpu.yaml"
    cls = config_class("generate")
    cfg = build_config(cls, recipe, limit=3, temperature=None)
    assert cfg.limit == 3 and cfg.temperature == 0.6
    bad = tmp_path / "generate_bad.yaml"
    bad.write_text("problems: gsm8k\ntemprature: 0.5\n")
    with pytest.raises(ConfigError, match=r"unknown keys \['temprature'\].*known:"):
        build_config(cls, bad)


def test_generate_reports_bad_input_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "1+1?", "answer": "2"}\n{"problem": "2+2?"}\n')
    t = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "stepprune.cli",
            "generate",
            "--problems",
            str(bad),
            "--out",
            str(tmp_path / "out"),
            "--model",
            "unused",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert "bad.jsonl:2" in proc.stderr and "answer" in proc.stderr
    assert not (tmp_path / "out").exists()
    assert time.perf_counter() - t < 60


def test_sft_args_that_are_no_number_fail_in_one_line_before_the_model(tmp_path):
    """``1e-5`` (a string to PyYAML) is converted; ``fast`` is refused in one line, before the
    model (a path that does not exist) is looked at and before the output directory exists."""
    from test_sft_data import pruned_row, write_pruned

    shards = write_pruned(tmp_path / "pruned", [pruned_row(0)])
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "stepprune.cli", "sft", "--input", str(shards)),
            *("--out", str(tmp_path / "out"), "--model", str(tmp_path / "no-model")),
            *("--set", "sft_args={learning_rate: fast, warmup_ratio: 1e-1}"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert errors == ["error: sft_args.learning_rate='fast' is not a number"], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()
