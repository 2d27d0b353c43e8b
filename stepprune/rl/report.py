"""What a GRPO run reports: its summary, curves (PNG) and model card, read from TRL's log history.

- ``reward_curve.png``: reward and its parts, skip ratio, mean completion length, entropy;
- ``entropy_hard_easy.png`` (CEEH): policy entropy on hard against easy questions' tokens;
- ``stages.png`` (a sequence such as EG): length and entropy over every stage on one time axis,
  a line at each stage boundary (the EG paper's Figure 3b).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

CURVE_KEYS = ("reward", "completions/mean_length", "entropy", "skip/ratio")
HYPERPARAMETERS = (
    *("num_generations", "temperature", "top_p", "max_completion_length", "learning_rate"),
    *("beta", "loss_type", "scale_rewards", "epsilon", "epsilon_high", "delta"),
    *("per_device_train_batch_size", "gradient_accumulation_steps"),
    *("max_steps", "num_train_epochs", "use_vllm", "vllm_mode", "bf16"),
)
METHOD_TITLES = {
    "se": 'the four-part skip/length reward of "Compressing Chain-of-Thought in LLMs via Step '
    'Entropy" (arXiv 2508.03346)',
    "eg-compress": "the compress stage of Entropy-Guided Reasoning Compression (arXiv 2511.14258)",
    "eg-explore": "the explore stage of Entropy-Guided Reasoning Compression (arXiv 2511.14258)",
    "ceeh": "CEEH with hard-only maximum-entropy loss (arXiv 2602.22642)",
    "ceeh-ea": "CEEH with hard-only entropy advantage (arXiv 2602.22642)",
}


def step_logs(history: list[dict]) -> list[dict]:
    """The per-step entries; ``entropy`` is over every rollout where the trainer logged that
    (TRL's own is over the rollouts in the loss, which EG compress narrows to R > 0)."""
    steps = [dict(h) for h in history if "reward" in h]
    for h in steps:
        if h.get("entropy/all_rollouts") is not None:
            h["entropy"] = h["entropy/all_rollouts"]
    return steps


def summarize(history: list[dict], global_step: int, seconds: float) -> dict:
    """First and last logged value of each curve and every reward mean; steps and wall time."""
    steps = step_logs(history)
    keys = sorted({k for h in steps for k in h if k.startswith("rewards/") and k.endswith("/mean")})
    first, last = (steps[0], steps[-1]) if steps else ({}, {})
    return {
        "global_step": global_step,
        "train_seconds": round(seconds, 1),
        "first": {k: first.get(k) for k in CURVE_KEYS},
        "last": {k: last.get(k) for k in CURVE_KEYS},
        "rewards": {k.split("/")[1]: last.get(k) for k in keys},
    }


def fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def format_summary(summary: dict) -> str:
    """The CLI's report: steps, time, and each curve's first -> last value (per stage)."""
    if "stages" in summary:
        return "\n\n".join(
            f"[{name}]\n{format_summary(s)}" for name, s in summary["stages"].items()
        )
    first, last = summary["first"], summary["last"]
    resumed = f", resumed from {summary['resumed_from']}" if summary.get("resumed_from") else ""
    lines = [f"steps           {summary['global_step']} ({summary['train_seconds']} s{resumed})"]
    lines += [f"{k:<24}{fmt(first[k])} -> {fmt(last[k])}" for k in CURVE_KEYS]
    lines += [f"{'rewards/' + k:<24}{fmt(v)} (last)" for k, v in summary["rewards"].items()]
    return "\n".join(lines)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(steps: list[dict], key: str) -> list[tuple]:
    return [(h["step"], h[key]) for h in steps if h.get(key) is not None]


def plot_curves(history: list[dict], path: Path) -> None:
    plt = _pyplot()
    steps = step_logs(history)
    rewards = sorted({k for h in steps for k in h if k.startswith("rewards/") and "/mean" in k})
    panels = [("reward", ["reward", *rewards]), ("skip ratio", ["skip/ratio"])]
    panels += [("mean completion tokens", ["completions/mean_length"]), ("entropy", ["entropy"])]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5))
    for ax, (title, keys) in zip(axes, panels, strict=True):
        for key in keys:
            if points := _series(steps, key):
                ax.plot(*zip(*points, strict=True), marker=".", label=key)
        ax.set_title(title)
        ax.set_xlabel("step")
        if len(keys) > 1:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_hard_easy(history: list[dict], path: Path) -> None:
    plt = _pyplot()
    steps = step_logs(history)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.5))
    for key, label in (("entropy/hard", "hard questions"), ("entropy/easy", "easy questions")):
        if points := _series(steps, key):
            ax.plot(*zip(*points, strict=True), marker=".", label=label)
    ax.set(title="policy entropy per token", xlabel="step", ylabel="nats")
    ax.legend(fontsize=8)
    for key in ("ceeh/frac_hard", "ceeh/acc_ema_mean"):
        if points := _series(steps, key):
            bx.plot(*zip(*points, strict=True), marker=".", label=key)
    bx.set(title="difficulty", xlabel="step")
    bx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_stages(histories: dict[str, list[dict]], path: Path) -> None:
    """Length and entropy over consecutive stages on one step axis (EG's Figure 3b)."""
    plt = _pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 3.8))
    offset = 0
    for name, history in histories.items():
        steps = step_logs(history)
        for axis, key in ((ax, "completions/mean_length"), (bx, "entropy")):
            if points := _series(steps, key):
                xs, ys = zip(*points, strict=True)
                axis.plot([offset + x for x in xs], ys, marker=".", label=name)
        offset += max((h["step"] for h in steps), default=0)
        for axis in (ax, bx):
            axis.axvline(offset, color="grey", lw=0.8, ls="--")
    ax.set(title="mean completion tokens", xlabel="step (stages in order)")
    bx.set(title="policy entropy (nats per token)", xlabel="step (stages in order)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_plots(method: str, history: list[dict], out: Path) -> None:
    try:
        plot_curves(history, out / "reward_curve.png")
        if method.startswith("ceeh"):
            plot_hard_easy(history, out / "entropy_hard_easy.png")
    except Exception:  # a missing or broken matplotlib must not lose a finished training run
        log.warning("could not plot the training curves", exc_info=True)


def model_card(cfg, args, summary: dict, n_problems: int, rewards, extensions) -> str:
    from stepprune.models import model_label

    weights = args.reward_weights or [1.0] * len(rewards)
    reward_rows = "\n".join(
        f"| {r.name} | {w} | `{r!r}` | {fmt(summary['rewards'].get(r.name))} |"
        for r, w in zip(rewards, weights, strict=True)
    )
    ext_rows = "\n".join(f"- `{e!r}`" for e in extensions) or "- none: TRL's own advantages"
    hyper_rows = "\n".join(f"| {k} | {getattr(args, k, None)} |" for k in HYPERPARAMETERS)
    curve_rows = "\n".join(
        f"| {k} | {fmt(summary['first'][k])} | {fmt(summary['last'][k])} |" for k in CURVE_KEYS
    )
    return f"""# stepprune GRPO model (`--method {cfg.method}`)

Trained by `stepprune grpo` (TRL GRPOTrainer with stepprune's RL layer) with
{METHOD_TITLES.get(cfg.method, cfg.method)}.

- Base model: {model_label(cfg.model)}
- Data: {n_problems} problems from `{cfg.problems}` (limit {cfg.limit}, sample {cfg.sample})
- LoRA: {json.dumps(cfg.lora) if cfg.lora is not None else "none (full fine-tuning)"}
- Steps: {summary["global_step"]}, training wall time {summary["train_seconds"]} s
- Resumed from: {summary.get("resumed_from")}

| reward | weight | settings | last mean |
|---|---|---|---|
{reward_rows}

Trainer extensions (advantage rule, loss terms, per-question state):
{ext_rows}

| GRPOConfig | value |
|---|---|
{hyper_rows}

Every `grpo_args` key in use: `{json.dumps(cfg.grpo_args)}`.

| metric | first step | last step |
|---|---|---|
{curve_rows}

Per-step metrics: `log_history.jsonl` (plotted in `reward_curve.png`); stage config:
`stepprune_config.json`; per-question state (if any): `rl_state.json`.
"""
