"""Multi-stage methods (``--method eg``): run each stage into ``out/<stage>``, each starting from
the previous stage's final model, and plot every stage's curves on one axis.

A stage whose directory holds ``summary.json`` is finished and skipped, so a killed run resumes
in the stage where it stopped (with ``--resume``, from its newest checkpoint). ``--resume`` wins
over ``overwrite``: a recipe that sets ``overwrite: true`` and is rerun with ``--resume`` keeps
its finished stages and checkpoints (a stage killed before its first checkpoint restarts either
way). Before anything runs, a resume is checked against the sequence's record and every
stage's (``rl.record``). ``order`` reverses the stages for the stage-order ablation;
``stages[<stage>]`` overrides any config field for one stage (``grpo_args`` and
``method_kwargs`` are merged key by key). With LoRA every stage but the last also writes merged
weights, which the next stage loads.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)
MERGED_KEYS = ("grpo_args", "method_kwargs", "reward_kwargs")


FIXED = ("out", "model", "method", "order", "stages", "resume", "overwrite")


def stage_configs(cfg) -> list:
    """One single-method config per stage, in order (models chained by ``run_sequence``);
    each stage's rewards and extensions are built here, so a bad option fails before any
    stage trains."""
    from stepprune.rl.methods import SEQUENCES, build_extensions, reward_names, reward_options
    from stepprune.rl.registry import build_rewards

    order = list(cfg.order or SEQUENCES[cfg.method])
    _check_stage_limits(cfg)
    fields = {f.name for f in dataclasses.fields(cfg)}
    configs = []
    for i, name in enumerate(order):
        overrides = dict(cfg.stages.get(name) or {})
        stray = sorted(set(overrides) - fields)
        if stray:
            raise ValueError(f"stages.{name}: unknown fields {stray}")
        fixed = sorted(set(overrides) & set(FIXED))
        if fixed:
            raise ValueError(f"stages.{name}: {fixed} are set by the sequence, not per stage")
        own = _own(cfg, name, order)
        for key in MERGED_KEYS:
            if key in overrides:
                overrides[key] = _merge(own.get(key, getattr(cfg, key)), overrides[key], key)
        base = dataclasses.replace(cfg, order=None, stages={}, method=name, **own)
        stage = dataclasses.replace(base, out=str(Path(cfg.out) / name), **overrides)
        if stage.lora is not None and i < len(order) - 1:
            stage = dataclasses.replace(stage, merge=True)
        rewards = build_rewards(reward_names(stage), **reward_options(stage))
        build_extensions(stage.method, stage.method_kwargs, rewards)
        configs.append(stage)
    return configs


def _check_stage_limits(cfg) -> None:
    """ThinkPrune's stages differ only in their length limit: one set for the whole sequence
    would silently make every stage the same."""
    if cfg.method != "thinkprune":
        return
    limit = (cfg.reward_kwargs.get("thinkprune") or {}).get("max_tokens")
    if limit is not None or "max_completion_length" in cfg.grpo_args:
        raise ValueError(
            "thinkprune: each stage has its own length limit; set grpo_args."
            "max_completion_length and reward_kwargs.thinkprune.max_tokens under stages.<stage>"
        )


def _merge(base: dict, override: dict, key: str) -> dict:
    """``override`` over ``base``; for reward and method options one level deeper, so that
    ``stages.s.reward_kwargs.r.rate`` keeps the sequence-wide ``r.max_tokens``."""
    if key == "grpo_args":
        return {**base, **override}
    return {k: {**(base.get(k) or {}), **(override.get(k) or {})} for k in {*base, *override}}


def _own(cfg, name: str, order: list[str]) -> dict:
    """The sequence-wide ``reward_kwargs`` and ``method_kwargs`` that belong to stage ``name``:
    options of another stage's rewards or extensions are left to that stage; an option that
    belongs to no stage stays, so it is still refused as unknown. Explore's length threshold
    defaults to compress's clip length L."""
    from stepprune.rl.methods import METHODS

    out = {}
    for key, owned in (("reward_kwargs", "rewards"), ("method_kwargs", "extensions")):
        everyone = {x for stage in order for x in getattr(METHODS[stage], owned)}
        mine = set(getattr(METHODS[name], owned))
        out[key] = {k: v for k, v in getattr(cfg, key).items() if k in mine or k not in everyone}
    clip = (cfg.reward_kwargs.get("eg_compress") or {}).get("max_tokens")
    if name == "eg-explore" and clip is not None:
        length = dict(out["reward_kwargs"].get("eg_length") or {})
        length.setdefault("max_tokens", clip)
        out["reward_kwargs"] = {**out["reward_kwargs"], "eg_length": length}
    return out


def final_model(stage_cfg) -> str:
    out = Path(stage_cfg.out)
    return str(out / "merged") if stage_cfg.lora is not None else str(out)


def run_sequence(cfg, run_single) -> dict:
    import gc

    from accelerate import PartialState

    from stepprune.rl.record import check_resume, effective_config, write_record

    configs = stage_configs(cfg)  # every stage's config is checked before anything runs
    state, out = PartialState(), Path(cfg.out)
    if out.is_dir() and any(out.iterdir()) and not (cfg.resume or cfg.overwrite):
        raise FileExistsError(f"{out} exists; pass --resume to continue it or --overwrite")
    if cfg.resume:
        check_resume(out, dataclasses.asdict(cfg))
        for stage in configs:
            check_resume(Path(stage.out), effective_config(stage))
    if cfg.overwrite and not cfg.resume and out.is_dir() and state.is_main_process:
        shutil.rmtree(out)
    state.wait_for_everyone()
    if state.is_main_process:
        write_record(out, dataclasses.asdict(cfg))
    model, summaries, histories = cfg.model, {}, {}
    for stage in configs:
        partial = Path(stage.out).is_dir() and not _has_checkpoint(Path(stage.out))
        # a stage killed before its first checkpoint left only logs: start it again
        stage = dataclasses.replace(stage, model=model, overwrite=partial, resume=bool(cfg.resume))
        done = Path(stage.out) / "summary.json"
        if done.exists():
            log.info("%s: finished earlier, skipped", stage.method)
            summaries[stage.method] = json.loads(done.read_text())
        else:
            summaries[stage.method] = run_single(stage)
            # The finished stage's trainer (model, optimizer, engine) goes first. A vLLM engine
            # froze the heap at its start (gc.freeze), which hides all of it from collection.
            gc.unfreeze()
            gc.collect()
            _empty_cuda_cache()
        histories[stage.method] = _history(Path(stage.out))
        model = final_model(stage)
    summary = {"method": cfg.method, "order": list(summaries), "stages": summaries}
    if state.is_main_process:
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        _plot(histories, out)
    return summary


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _has_checkpoint(out: Path) -> bool:
    from stepprune.train.checkpoints import last_complete_checkpoint

    return last_complete_checkpoint(out) is not None


def _history(out: Path) -> list[dict]:
    path = out / "log_history.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _plot(histories: dict, out: Path) -> None:
    from stepprune.rl.report import plot_stages

    try:
        plot_stages(histories, out / "stages.png")
    except Exception:
        log.warning("could not plot the stages", exc_info=True)
