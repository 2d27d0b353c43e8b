"""The grpo stage: TRL's GRPOTrainer with the paper's four-part skip/length reward.

Owns the stage config, the output directory (checkpoints, final model, ``log_history.jsonl``
rewritten at every log so a killed run keeps its curve, ``reward_curve.png``, ``summary.json``
and the model card ``README.md``) and resuming. Everything TRL owns stays in ``grpo_args``,
passed to ``trl.GRPOConfig`` untouched; ``lora`` is passed to ``peft.LoraConfig`` (an unknown
key in either is a ``ValueError`` naming it). Rollouts use vLLM when ``grpo_args`` says
``use_vllm`` (colocate or server mode), else transformers.

``out`` is never cleared without ``overwrite``. ``resume`` continues from the newest checkpoint
in ``out``, starts from the model when ``out`` is empty or missing, and refuses an ``out`` that
holds files but no checkpoint (an old run's logs and card would be mixed with the new run's).

Logged per step (``log_history.jsonl``): ``reward``, ``rewards/<name>/mean`` for each reward,
``skip/ratio``, ``skip/count``, ``skip/kept_steps`` (from the skip_ratio reward),
``completions/mean_length`` and the policy ``entropy`` (from TRL).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from stepprune.stages.generate import DEFAULT_PROMPT

log = logging.getLogger(__name__)

CURVE_KEYS = ("reward", "skip/ratio", "completions/mean_length", "entropy")
HYPERPARAMETERS = (
    *("num_generations", "temperature", "top_p", "max_completion_length", "learning_rate"),
    *("beta", "loss_type", "per_device_train_batch_size", "gradient_accumulation_steps"),
    *("max_steps", "num_train_epochs", "use_vllm", "vllm_mode", "bf16"),
)


@dataclass
class GRPOStageConfig:
    problems: str = "gsm8k_train"  # built-in set, problem file, hub:id, or pruned shards
    out: str = "runs/grpo"
    model: str | None = None  # None: the embedded SmolLM2-135M-Instruct; else an SFT checkpoint
    data_dir: str | None = None
    limit: int | None = None  # the first N problems
    sample: int | None = None  # then N drawn at random with seed (the authors: 10000)
    prompt_template: str = DEFAULT_PROMPT
    system_prompt: str | None = None
    reward_funcs: list = field(
        default_factory=lambda: ["correctness", "skip_ratio", "skip_count", "length"]
    )
    reward_weights: list | None = None  # None: all 1.0
    reward_kwargs: dict = field(default_factory=dict)  # reward name -> its options
    lora: dict | None = None  # peft.LoraConfig kwargs; None: full fine-tuning
    grpo_args: dict = field(default_factory=dict)  # trl.GRPOConfig kwargs
    resume: bool | str = False  # True: the last checkpoint in out; a path: that checkpoint
    overwrite: bool = False
    seed: int = 0


def grpo_config(cfg: GRPOStageConfig):
    """``trl.GRPOConfig`` from ``grpo_args`` plus the fields this stage owns."""
    from trl import GRPOConfig

    args = dict(cfg.grpo_args)
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
    if weights is not None and len(weights) != len(cfg.reward_funcs):
        raise ValueError(f"{len(weights)} reward_weights for reward_funcs {cfg.reward_funcs}")
    try:
        return GRPOConfig(output_dir=cfg.out, seed=cfg.seed, reward_weights=weights, **args)
    except TypeError as e:
        raise ValueError(f"grpo_args: {e}") from e


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def _prepare_out(cfg: GRPOStageConfig) -> str | None:
    """The checkpoint to resume from, if any; clears ``out`` when asked to overwrite it (rules in
    the module docstring)."""
    from transformers.trainer_utils import get_last_checkpoint

    out = Path(cfg.out)
    if isinstance(cfg.resume, str) and cfg.resume:
        if not Path(cfg.resume).is_dir():
            raise FileNotFoundError(f"resume: checkpoint {cfg.resume!r} not found")
        return cfg.resume
    checkpoint = get_last_checkpoint(str(out)) if cfg.resume and out.is_dir() else None
    if checkpoint is not None:
        return checkpoint
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


def _log_writer(out: Path):
    """A callback that rewrites ``log_history.jsonl`` from the trainer state at every log."""
    from transformers import TrainerCallback

    class LogHistoryWriter(TrainerCallback):
        def on_log(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                write_log_history(out, state.log_history)

    return LogHistoryWriter()


def write_log_history(out: Path, history: list[dict]) -> None:
    from stepprune.shards import atomic_write_bytes

    out.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(entry) + "\n" for entry in history)
    atomic_write_bytes(out / "log_history.jsonl", lines.encode())


def run(cfg: GRPOStageConfig) -> dict:
    from transformers import AutoTokenizer
    from trl import GRPOTrainer

    from stepprune.models import resolve_model
    from stepprune.rl.rewards import build_rewards
    from stepprune.shards import check_apart
    from stepprune.stages.sft import lora_config
    from stepprune.train.grpo_data import build_dataset, training_problems

    args = grpo_config(cfg)  # first: it sets up the distributed state the rest relies on
    problems = training_problems(
        cfg.problems, data_dir=cfg.data_dir, limit=cfg.limit, sample=cfg.sample, seed=cfg.seed
    )
    if Path(cfg.problems).exists():
        check_apart(cfg.out, [cfg.problems])
    model = resolve_model(cfg.model)
    tokenizer = AutoTokenizer.from_pretrained(
        model, padding_side="left", truncation_side="left", trust_remote_code=args.trust_remote_code
    )
    rewards = build_rewards(cfg.reward_funcs, tokenizer=tokenizer, **cfg.reward_kwargs)
    peft_config = lora_config(cfg.lora) if cfg.lora is not None else None
    dataset = build_dataset(problems, cfg.prompt_template, cfg.system_prompt)
    # Only now, with every input checked, may an old output be replaced.
    with args.main_process_first(local=False, desc="grpo output directory"):
        checkpoint = _prepare_out(cfg)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=rewards,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[_log_writer(Path(cfg.out))],
    )
    log.info("GRPO on %d problems, rewards %s, resume from %s", len(problems), rewards, checkpoint)
    started = time.monotonic()
    trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.monotonic() - started
    trainer.save_model(cfg.out)
    summary = summarize(trainer.state.log_history, trainer.state.global_step, seconds)
    summary.update(out=cfg.out, resumed_from=checkpoint, n_problems=len(problems))
    if trainer.is_world_process_zero():
        _write_outputs(cfg, args, trainer.state.log_history, summary, len(problems))
    return summary


def summarize(history: list[dict], global_step: int, seconds: float) -> dict:
    """First and last logged value of each curve and every reward mean; steps and wall time."""
    steps = [h for h in history if "reward" in h]
    keys = sorted({k for h in steps for k in h if k.startswith("rewards/") and k.endswith("/mean")})
    first, last = (steps[0], steps[-1]) if steps else ({}, {})
    return {
        "global_step": global_step,
        "train_seconds": round(seconds, 1),
        "first": {k: first.get(k) for k in CURVE_KEYS},
        "last": {k: last.get(k) for k in CURVE_KEYS},
        "rewards": {k.split("/")[1]: last.get(k) for k in keys},
    }


def format_summary(summary: dict) -> str:
    """The CLI's report: steps, time, and each curve's first -> last value."""
    first, last = summary["first"], summary["last"]
    resumed = f", resumed from {summary['resumed_from']}" if summary.get("resumed_from") else ""
    lines = [f"steps           {summary['global_step']} ({summary['train_seconds']} s{resumed})"]
    lines += [f"{k:<24}{_fmt(first[k])} -> {_fmt(last[k])}" for k in CURVE_KEYS]
    lines += [f"rewards/{k:<16}{_fmt(v)} (last)" for k, v in summary["rewards"].items()]
    return "\n".join(lines)


def _write_outputs(cfg, args, history, summary, n_problems) -> None:
    out = Path(cfg.out)
    write_log_history(out, history)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    save_config(cfg)
    try:
        plot_curves(history, out / "reward_curve.png")
    except Exception:  # a missing or broken matplotlib must not lose a finished training run
        log.warning("could not plot the reward curve", exc_info=True)
    (out / "README.md").write_text(model_card(cfg, args, summary, n_problems))


def plot_curves(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h for h in history if "reward" in h]
    reward_keys = sorted({k for h in steps for k in h if k.startswith("rewards/") and "/mean" in k})
    panels = [("reward", ["reward", *reward_keys]), ("skip ratio", ["skip/ratio"])]
    panels.append(("mean completion tokens", ["completions/mean_length"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5))
    for ax, (title, keys) in zip(axes, panels, strict=True):
        for key in keys:
            points = [(h["step"], h[key]) for h in steps if h.get(key) is not None]
            if points:
                ax.plot(*zip(*points, strict=True), marker=".", label=key)
        ax.set_title(title)
        ax.set_xlabel("step")
        if len(keys) > 1:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def model_card(cfg: GRPOStageConfig, args, summary: dict, n_problems: int) -> str:
    from stepprune.models import model_label

    options = {name: cfg.reward_kwargs.get(name) or {} for name in cfg.reward_funcs}
    weights = args.reward_weights or [1.0] * len(cfg.reward_funcs)
    reward_rows = "\n".join(
        f"| {n} | {w} | {json.dumps(options[n])} | {_fmt(summary['rewards'].get(n))} |"
        for n, w in zip(cfg.reward_funcs, weights, strict=True)
    )
    hyper_rows = "\n".join(f"| {k} | {getattr(args, k, None)} |" for k in HYPERPARAMETERS)
    curve_rows = "\n".join(
        f"| {k} | {_fmt(summary['first'][k])} | {_fmt(summary['last'][k])} |" for k in CURVE_KEYS
    )
    return f"""# stepprune GRPO model

Trained by `stepprune grpo` (TRL GRPOTrainer) with the four-part skip/length reward of
"Compressing Chain-of-Thought in LLMs via Step Entropy" (arXiv 2508.03346).

- Base model: {model_label(cfg.model)}
- Data: {n_problems} problems from `{cfg.problems}` (limit {cfg.limit}, sample {cfg.sample})
- LoRA: {json.dumps(cfg.lora) if cfg.lora is not None else "none (full fine-tuning)"}
- Steps: {summary["global_step"]}, training wall time {summary["train_seconds"]} s
- Resumed from: {summary.get("resumed_from")}

| reward | weight | options (others: defaults) | last mean |
|---|---|---|---|
{reward_rows}

| GRPOConfig | value |
|---|---|
{hyper_rows}

Every `grpo_args` key: `{json.dumps(cfg.grpo_args)}`.

| metric | first step | last step |
|---|---|---|
{curve_rows}

Per-step metrics: `log_history.jsonl` (plotted in `reward_curve.png`); stage config:
`stepprune_config.json`.
"""


def save_config(cfg: GRPOStageConfig) -> None:
    path = Path(cfg.out) / "stepprune_config.json"
    path.write_text(json.dumps(asdict(cfg), indent=1, default=str))
