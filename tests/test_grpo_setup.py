"""GRPO set-up without training: training problems from pruned shards or sets, recipes."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from stepprune.config import build_config
from stepprune.stages.grpo import GRPOStageConfig
from stepprune.train.grpo_data import build_dataset, training_problems

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "pipelines").glob("grpo_*.yaml"))


def write_pruned_shard(path: Path, rows: list[tuple[str, int, str, str]]) -> None:
    from stepprune.schema import PRUNED, to_table
    from stepprune.shards import write_table_atomic

    def row(pid, sample, problem, gold):
        return dict(
            problem_id=pid,
            sample_index=sample,
            source="toy",
            problem=problem,
            gold_answer=gold,
            model="m",
            entropy_source="exact",
            correct=True,
            original_thinking="a\n\nb",
            compressed_thinking="[SKIP]\n\nb",
            answer_text="\\boxed{1}",
            skip_mask=[True, False],
            n_steps=2,
            n_skipped=1,
            original_thinking_tokens=4,
            kept_thinking_tokens=2,
            compression_ratio=0.5,
            kappa=0.8,
            strategy="low",
            score="sum",
            budget="steps",
            seed=0,
            prompt="p",
            completion="c",
        )

    path.mkdir(parents=True, exist_ok=True)
    write_table_atomic(to_table([row(*r) for r in rows], PRUNED), path / "part-00000.parquet")


def test_training_problems_from_pruned_shards(tmp_path, caplog):
    shards = tmp_path / "pruned"
    unique = [("toy-0", "1+1?", "2"), ("toy-1", "2+3?", "5"), ("toy-2", "9-4?", "5")]
    write_pruned_shard(shards, [(i, 0, q, a) for i, q, a in unique] + [("toy-0", 1, "1+1?", "2")])
    problems = training_problems(str(shards))
    assert [(p.id, p.problem, p.answer) for p in problems] == unique  # one per problem
    first_two = training_problems(str(shards / "part-00000.parquet"), limit=2)
    assert [p.id for p in first_two] == ["toy-0", "toy-1"]
    with caplog.at_level(logging.WARNING, logger="stepprune.train.grpo_data"):
        assert len(training_problems(str(shards), sample=100)) == 3
    assert "sample 100 asks for more problems than" in caplog.text and "(3)" in caplog.text
    drawn = [p.id for p in training_problems(str(shards), sample=2, seed=3)]
    again = [p.id for p in training_problems(str(shards), sample=2, seed=3)]
    assert len(set(drawn)) == 2 and drawn == again
    ds = build_dataset(problems[:1], "Q: {problem} (box it)", system_prompt="Be brief.")
    assert ds[0] == {
        "prompt": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Q: 1+1? (box it)"},
        ],
        "gold_answer": "2",
        "problem_id": "toy-0",
    }
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="without pruned"):
        training_problems(str(empty))


def test_training_problems_from_a_builtin_set(data_dir):
    problems = training_problems("mawps_singleop", data_dir=str(data_dir), limit=3)
    assert len(problems) == 3 and all(p.id.startswith("mawps_singleop-") for p in problems)
    ds = build_dataset(problems, "{problem}")
    assert ds[0]["prompt"] == [{"role": "user", "content": problems[0].problem}]
    assert ds[0]["gold_answer"] == problems[0].answer


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_grpo_recipes_build_their_rewards_extensions_lora_and_trl_args(recipe):
    from peft import LoraConfig
    from trl import GRPOConfig

    from stepprune.rl.methods import SEQUENCES, build_extensions, method_grpo_args, reward_names
    from stepprune.rl.registry import build_rewards
    from stepprune.rl.sequence import stage_configs
    from stepprune.train.peft import lora_config

    cfg = build_config(GRPOStageConfig, recipe)
    stages = stage_configs(cfg) if cfg.method in SEQUENCES else [cfg]
    trl_fields = {f.name for f in dataclasses.fields(GRPOConfig)}
    for stage in stages:
        rewards = build_rewards(reward_names(stage), **stage.reward_kwargs)
        assert [r.__name__ for r in rewards] == reward_names(stage)
        build_extensions(stage.method, stage.method_kwargs, rewards)
        args = method_grpo_args(stage.method, stage.grpo_args)
        assert set(args) <= trl_fields, set(args) - trl_fields
        if stage.lora is not None:
            assert isinstance(lora_config(stage.lora), LoraConfig)
            assert lora_config({"task_type": "CAUSAL_LM", **stage.lora}).task_type == "CAUSAL_LM"


def test_eg_paper_recipes_clip_at_4096_and_explore_hotter():
    from stepprune.rl.sequence import stage_configs

    for size in ("1p5b", "7b"):
        cfg = build_config(
            GRPOStageConfig, REPO / "pipelines" / f"grpo_eg_r1_distill_{size}_paper.yaml"
        )
        compress, explore = stage_configs(cfg)
        assert (compress.method, explore.method) == ("eg-compress", "eg-explore")
        assert cfg.reward_kwargs["eg_compress"]["max_tokens"] == 4096
        assert compress.grpo_args["max_completion_length"] == 4096
        assert explore.grpo_args["max_completion_length"] == 8192
        assert explore.out.endswith("eg-explore") and compress.merge is False  # full weights


def test_ceeh_paper_recipes_hold_the_authors_settings():
    from stepprune.rl.methods import build_extensions, method_grpo_args, reward_names
    from stepprune.rl.registry import build_rewards

    def rewards(cfg):
        return build_rewards(reward_names(cfg), **cfg.reward_kwargs)

    for size, mode in (("1p5b", "ea"), ("7b", "me")):
        recipe = REPO / "pipelines" / f"grpo_ceeh_r1_distill_{size}_paper.yaml"
        cfg = build_config(GRPOStageConfig, recipe)
        g = method_grpo_args(cfg.method, cfg.grpo_args)
        assert (g["num_generations"], g["temperature"], g["learning_rate"]) == (12, 0.6, 3e-5)
        assert (g["beta"], g["epsilon_high"], g["delta"], g["scale_rewards"]) == (
            0.001,
            0.28,
            3.0,
            "none",
        )
        assert cfg.method_kwargs["ceeh"]["mode"] == mode and (
            cfg.lora["r"],
            cfg.lora["lora_alpha"],
        ) == (32, 32)
        built = build_extensions(cfg.method, cfg.method_kwargs, rewards(cfg))
        ceeh = next(e for e in built if e.name == "ceeh")
        if mode == "me":  # its header claims the paper's Eq. 11: hard 5, easy 1
            assert "Eq. 11" in recipe.read_text()
            assert (ceeh.hard_weight, ceeh.easy_weight, ceeh.coef) == (5, 1, 0.001)


# The CEEH authors' settings, transcribed from QinwenLuo/CEEH train.sh (commit c326628) and
# verl's defaults it relies on; checked against the method presets, not against our recipes.
CEEH_TRAIN_SH = {
    "rollout.n": 12,
    "kl_loss_coef": 0.001,  # low_var_kl = TRL's k3 estimator
    "clip_ratio_high": 0.28,
    "clip_ratio_low": 0.2,  # verl's default clip_ratio
    "clip_ratio_c": 3.0,  # verl's default dual-clip constant
    "entropy_advantage_alpha": 0.4,
    "entropy_advantage_kappa": 2.0,
    "length_rewards.reward_scale": 0.1,
    "entropy_coeff": 0.0,  # verl's all-token entropy bonus stays off
}


def test_ceeh_presets_hold_the_authors_values():
    from stepprune.rl.ceeh import CEEH
    from stepprune.rl.methods import METHODS, build_extensions
    from stepprune.rl.registry import build_rewards

    a = CEEH_TRAIN_SH
    for name, mode in (("ceeh", "me"), ("ceeh-ea", "ea")):
        g = METHODS[name].grpo_args
        assert g["num_generations"] == a["rollout.n"] and g["beta"] == a["kl_loss_coef"]
        assert (g["epsilon"], g["epsilon_high"]) == (a["clip_ratio_low"], a["clip_ratio_high"])
        assert g["delta"] == a["clip_ratio_c"] and g.get("entropy_coef", 0.0) == a["entropy_coeff"]
        rewards = build_rewards(list(METHODS[name].rewards))
        ext = next(e for e in build_extensions(name, {}, rewards) if isinstance(e, CEEH))
        assert ext.mode == mode
        assert (ext.alpha, ext.kappa) == (
            a["entropy_advantage_alpha"],
            a["entropy_advantage_kappa"],
        )
        assert ext.length_scale == a["length_rewards.reward_scale"]


def test_paper_recipe_holds_the_papers_settings():
    cfg = build_config(GRPOStageConfig, REPO / "pipelines" / "grpo_r1_distill_7b_paper.yaml")
    g = cfg.grpo_args
    assert (g["num_generations"], g["temperature"], g["learning_rate"]) == (8, 0.6, 1e-5)
    assert g["max_completion_length"] == 4096 and g["use_vllm"] and g["vllm_mode"] == "server"
    assert (cfg.lora["r"], cfg.lora["lora_alpha"]) == (16, 32)
    assert cfg.reward_funcs == ["correctness", "skip_ratio", "skip_count", "length"]
    assert cfg.reward_kwargs == {} and cfg.sample == 10000
