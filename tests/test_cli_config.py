"""``stepprune config STAGE`` and ``--version``: the printed config is a recipe that builds the
stage's default config, with every field and the meanings written beside the fields."""

from __future__ import annotations

import dataclasses
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
    assert lines["method"].endswith("# se | eg | eg-compress | eg-explore | ceeh | ceeh-ea")
    assert lines["lora"].endswith("# peft.LoraConfig kwargs; None: full fine-tuning")
    bad = _cli("config", "nope")
    assert bad.returncode == 1 and bad.stderr.strip().startswith("error: unknown stage 'nope'")
