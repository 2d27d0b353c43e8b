"""The grpo stage: GRPO on TRL with a method preset (``--method se | eg | eg-compress |
eg-explore | ceeh | ceeh-ea``; ``stepprune.rl.methods``).

Owns the stage config, the output directory (checkpoints, final model, ``log_history.jsonl``
rewritten at every log so a killed run keeps its curve, plots, ``summary.json``,
``rl_state.json`` and the model card ``README.md``) and resuming. Everything TRL owns stays in
``grpo_args``, passed to ``trl.GRPOConfig`` over the method's defaults (numbers PyYAML left
strings, ``1e-5``, converted: ``config.coerce_numbers``); ``lora`` goes to
``peft.LoraConfig`` (an unknown key in either is a ``ValueError`` naming it). Rollouts use vLLM
when ``grpo_args`` says ``use_vllm`` (colocate or server mode), else transformers.

``out`` is never cleared without ``overwrite``. ``resume`` continues from the newest checkpoint
in ``out``, starts from the model when ``out`` is empty or missing, and refuses an ``out`` that
holds files but no checkpoint (an old run's logs and card would be mixed with the new run's),
except what a run writes before its first checkpoint (``log_history.jsonl`` and the record
``stepprune_config.json``): a run killed before its first checkpoint starts again. A resumed run
must keep its method, rewards and extension options (``rl.record``).
A sequence (``--method eg``) runs its stages into ``out/<stage>`` (``rl.sequence``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from stepprune.data.prompts import DEFAULT_PROMPT

log = logging.getLogger(__name__)


@dataclass
class GRPOStageConfig:
    problems: str = "gsm8k_train"  # built-in set, problem file, hub:id, or pruned shards
    out: str = "runs/grpo"
    model: str | None = None  # None: the embedded SmolLM2-135M-Instruct; else an SFT checkpoint
    method: str = "se"  # se, eg, ceeh(-ea), kimi, shorterbetter, thinkprune (rl/methods.py)
    data_dir: str | None = None
    limit: int | None = None  # the first N problems
    sample: int | None = None  # then N drawn at random with seed (the authors: 10000)
    prompt_template: str = DEFAULT_PROMPT
    system_prompt: str | None = None
    reward_funcs: list | None = None  # None: the method's rewards
    extra_rewards: list = field(default_factory=list)  # added to them (e.g. soft_overlong)
    reward_weights: list | None = None  # None: all 1.0
    reward_kwargs: dict = field(default_factory=dict)  # reward name -> its options
    method_kwargs: dict = field(default_factory=dict)  # extension name -> its options
    id_field: str | None = None  # a problem file's id column (None: <file stem>-<row>)
    question_id_column: str = "problem_id"  # per-question state is keyed by it
    order: list | None = None  # a sequence's stage order (None: the method's; reversed: ablation)
    stages: dict = field(default_factory=dict)  # a sequence's stage -> overrides of these fields
    lora: dict | None = None  # peft.LoraConfig kwargs; None: full fine-tuning
    grpo_args: dict = field(default_factory=dict)  # trl.GRPOConfig kwargs
    merge: bool = False  # with LoRA: also write merged full weights to out/merged
    resume: bool | str = False  # True: the last checkpoint in out; a path: that checkpoint
    overwrite: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        from trl import GRPOConfig

        from stepprune.config import coerce_numbers
        from stepprune.rl.methods import SEQUENCES, check_method

        check_method(self.method)
        self.grpo_args = coerce_numbers(GRPOConfig, self.grpo_args, "grpo_args")
        if self.method in SEQUENCES:
            order = self.order or list(SEQUENCES[self.method])
            if sorted(order) != sorted(SEQUENCES[self.method]):
                raise ValueError(f"order {order}: a permutation of {list(SEQUENCES[self.method])}")
            stray = sorted(set(self.stages) - set(order))
            if stray:
                raise ValueError(f"stages: {stray} are not stages of {self.method} ({order})")
            if self.reward_funcs is not None or self.reward_weights is not None:
                raise ValueError(
                    f"{self.method} runs stages with different rewards: set reward_funcs and "
                    "reward_weights per stage, under stages.<stage>"
                )
        elif self.order is not None or self.stages:
            raise ValueError(f"order and stages apply to sequences ({', '.join(SEQUENCES)})")


def grpo_config(cfg: GRPOStageConfig):
    """``trl.GRPOConfig`` from the method's defaults, ``grpo_args`` and the stage's fields."""
    from trl import GRPOConfig

    from stepprune.rl.methods import method_grpo_args, reward_names

    args = method_grpo_args(cfg.method, cfg.grpo_args)
    for key, owner in (("output_dir", "out"), ("seed", "seed")):
        if key in args:
            raise ValueError(f"grpo_args.{key}: set the stage's `{owner}` instead")
    if "bf16" not in args and "fp16" not in args and not _has_gpu():
        # TRL turns bf16 on whenever it is unset, which refuses to start on a machine without
        # a GPU; a recipe that says nothing about precision should still run there.
        args["bf16"] = False
    weights = cfg.reward_weights
    if weights is not None and args.get("reward_weights") is not None:
        raise ValueError("reward weights given twice: reward_weights and grpo_args.reward_weights")
    weights = args.pop("reward_weights", None) if weights is None else list(weights)
    names = reward_names(cfg)
    if weights is not None and len(weights) != len(names):
        raise ValueError(f"{len(weights)} reward_weights for reward_funcs {names}")
    if args.get("use_vllm"):
        _check_vllm_installed()
    try:
        return GRPOConfig(output_dir=cfg.out, seed=cfg.seed, reward_weights=weights, **args)
    except TypeError as e:
        raise ValueError(f"grpo_args: {e}") from e


def _check_vllm_installed() -> None:
    """TRL would say so only after the model has loaded."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise ValueError(
            "grpo_args.use_vllm: vLLM is not installed in this environment; run grpo from one "
            "that has it (bash .ci/setup-vllm makes .venv-vllm) or drop use_vllm"
        )


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def _prepare_out(cfg: GRPOStageConfig) -> str | None:
    """The checkpoint to resume from, if any; clears ``out`` when asked to overwrite it (rules in
    the module docstring)."""
    from stepprune.rl.record import check_resume, effective_config

    out = Path(cfg.out)
    if isinstance(cfg.resume, str) and cfg.resume:
        if not Path(cfg.resume).is_dir():
            raise FileNotFoundError(f"resume: checkpoint {cfg.resume!r} not found")
        check_resume(Path(cfg.resume).parent, effective_config(cfg))
        return cfg.resume
    if cfg.resume:
        check_resume(out, effective_config(cfg))
    from stepprune.train.checkpoints import last_complete_checkpoint

    checkpoint = last_complete_checkpoint(out) if cfg.resume and out.is_dir() else None
    if checkpoint is not None:
        return checkpoint
    if cfg.resume and out.is_dir() and _only_early_logs(out):
        # Killed before its first checkpoint: nothing to continue, and the log is of no run.
        for path in out.iterdir():
            path.unlink()
    if out.is_dir() and any(out.iterdir()):
        if cfg.resume and not cfg.overwrite:
            raise FileExistsError(
                f"--resume: {out} holds files but no checkpoint to resume from; "
                "pass --overwrite to replace them or choose another --out"
            )
        if not cfg.overwrite:
            raise FileExistsError(f"{out} exists; pass --overwrite to replace it or --resume")
        shutil.rmtree(out)
    if cfg.resume:
        log.warning("resume: no checkpoint in %s; starting from the model", out)
    return None


def _only_early_logs(out: Path) -> bool:
    """Does ``out`` hold only what a run writes before its first checkpoint?"""
    from stepprune.rl.record import CONFIG_FILE

    names = {p.name for p in out.iterdir()}
    early = {"log_history.jsonl", CONFIG_FILE}
    return bool(names) and names <= early and all((out / n).is_file() for n in names)


def run(cfg: GRPOStageConfig) -> dict:
    from stepprune.rl.methods import SEQUENCES

    if cfg.method in SEQUENCES:
        from stepprune.rl.sequence import run_sequence

        return run_sequence(cfg, run_single)
    return run_single(cfg)


def run_single(cfg: GRPOStageConfig) -> dict:
    """One method's GRPO run into ``cfg.out``; every input is checked before ``out`` changes."""
    from stepprune.rl.methods import check_method_inputs
    from stepprune.rl.record import effective_config, write_record
    from stepprune.rl.trainer import RLTrainer
    from stepprune.shards import check_apart
    from stepprune.train.checkpoints import log_history_writer
    from stepprune.train.grpo_data import build_dataset, training_problems
    from stepprune.train.peft import lora_config

    if cfg.method == "eg-explore" and cfg.model is None:
        raise ValueError(
            "eg-explore starts from the compress stage's model: pass --model OUT/eg-compress "
            "(or run both stages with --method eg)"
        )
    args = grpo_config(cfg)  # first: it sets up the distributed state the rest relies on
    problems = training_problems(
        cfg.problems,
        data_dir=cfg.data_dir,
        limit=cfg.limit,
        sample=cfg.sample,
        seed=cfg.seed,
        id_field=cfg.id_field,
    )
    if Path(cfg.problems).exists():
        check_apart(cfg.out, [cfg.problems])
    model, tokenizer, rewards, extensions = _build_parts(cfg, args)
    peft_config = lora_config(cfg.lora) if cfg.lora is not None else None
    dataset = build_dataset(problems, cfg.prompt_template, cfg.system_prompt)
    check_method_inputs(cfg, args, dataset)
    # Only now, with every input checked, may an old output be replaced.
    with args.main_process_first(local=False, desc="grpo output directory"):
        checkpoint = _prepare_out(cfg)
    if args.process_index == 0:  # after every process has prepared out: none deletes it
        write_record(Path(cfg.out), effective_config(cfg))
    trainer = RLTrainer(
        model=model,
        reward_funcs=rewards,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[log_history_writer(Path(cfg.out))],
        extensions=extensions,
        question_id_column=cfg.question_id_column,
    )
    log.info("GRPO (%s) on %d problems, resume from %s", cfg.method, len(problems), checkpoint)
    started = time.monotonic()
    trainer.train(resume_from_checkpoint=checkpoint)
    return _finish(cfg, args, trainer, time.monotonic() - started, checkpoint, problems)


def _build_parts(cfg: GRPOStageConfig, args):
    """Model path, tokenizer, rewards and extensions, each checked (bad options fail here)."""
    from transformers import AutoTokenizer

    from stepprune.models import resolve_model
    from stepprune.rl.methods import build_extensions, reward_names, reward_options
    from stepprune.rl.registry import build_rewards

    model = resolve_model(cfg.model)
    tokenizer = AutoTokenizer.from_pretrained(
        model, padding_side="left", truncation_side="left", trust_remote_code=args.trust_remote_code
    )
    rewards = build_rewards(
        reward_names(cfg),
        tokenizer=tokenizer,
        stop_ids=stop_ids(model, tokenizer),
        **reward_options(cfg),
    )
    extensions = build_extensions(cfg.method, cfg.method_kwargs, rewards)
    return model, tokenizer, rewards, extensions


def stop_ids(model_path: str, tokenizer) -> set[int]:
    """The ids that end a completion: the tokenizer's EOS and the generation config's."""
    from transformers import GenerationConfig

    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    try:
        eos = GenerationConfig.from_pretrained(model_path).eos_token_id
    except OSError:
        eos = None
    ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    return ids


def _finish(cfg, args, trainer, seconds: float, checkpoint, problems) -> dict:
    from stepprune.rl.report import summarize

    trainer.save_model(cfg.out)
    history = trainer.state.log_history
    summary = summarize(history, trainer.state.global_step, seconds)
    summary.update(out=cfg.out, resumed_from=checkpoint, n_problems=len(problems))
    if cfg.merge and cfg.lora is not None and trainer.is_world_process_zero():
        from stepprune.train.peft import merge

        merge(trainer, trainer.processing_class, Path(cfg.out))
    if trainer.is_world_process_zero():
        _write_outputs(cfg, args, trainer, summary, len(problems))
    trainer.accelerator.wait_for_everyone()
    return summary


def _write_outputs(cfg, args, trainer, summary, n_problems) -> None:
    from stepprune.rl.record import effective_stage, write_record
    from stepprune.rl.report import model_card, write_plots
    from stepprune.train.checkpoints import write_log_history

    out = Path(cfg.out)
    history = trainer.state.log_history
    write_log_history(out, history)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    effective = effective_stage(cfg)
    write_record(out, dataclasses.asdict(effective))
    if trainer.extensions:
        (out / "rl_state.json").write_text(json.dumps(trainer.rl_state()))
    write_plots(cfg.method, history, out)
    card = model_card(
        effective, args, summary, n_problems, trainer.reward_funcs, trainer.extensions
    )
    (out / "README.md").write_text(card)
    log.info("outputs written to %s by process %d", out, args.process_index)
