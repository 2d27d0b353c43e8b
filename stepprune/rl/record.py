"""A GRPO run's record of how it was made, and the refusal to resume it any other way.

``stepprune_config.json`` in a run's output holds the effective stage config. It is written
when training starts (so a killed run has it) and again when the run ends. ``--resume`` compares
the new config with it and refuses another method, other rewards (names, weights, options) or
other extension options: continuing would mix two runs' reward curves under one model card and
carry per-question state (``rl_state.json``) into a method it does not belong to. Everything
else (steps, learning rate, ...) may change on resume. A sequence (``--method eg``) records its
method and stage order at the top; each stage records its own config in its directory.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

CONFIG_FILE = "stepprune_config.json"


def identity(config: dict) -> dict:
    """What a resumed run must share with ``config`` (a stage config as a dict); every reward's
    and extension's options with their defaults filled in, so that an option spelled out at its
    default is no change."""
    from stepprune.rl.methods import METHODS, SEQUENCES, extension_class
    from stepprune.rl.registry import REWARDS

    method = config.get("method")
    if method in SEQUENCES:
        return {"method": method, "order": list(config.get("order") or SEQUENCES[method])}
    preset = METHODS.get(method)
    weights = config.get("reward_weights")
    if weights is None:
        weights = (config.get("grpo_args") or {}).get("reward_weights")
    rewards = config.get("reward_funcs") or (list(preset.rewards) if preset else [])
    options = config.get("reward_kwargs") or {}
    reward_kwargs = {
        n: {**(_defaults(REWARDS[n]) if n in REWARDS else {}), **(options.get(n) or {})}
        for n in rewards
    }
    options = config.get("method_kwargs") or {}
    extensions = {
        n: {**_defaults(extension_class(n)), **preset_options, **(options.get(n) or {})}
        for n, preset_options in (preset.extensions if preset else {}).items()
    }
    ident = dict(method=method, reward_funcs=rewards, reward_weights=weights)
    ident.update(reward_kwargs=reward_kwargs, extensions=extensions)
    return json.loads(json.dumps(ident, default=str))  # as a record reads back


def _defaults(cls) -> dict:
    """The keyword defaults of ``cls`` and its bases' ``__init__`` (a subclass's win)."""
    import inspect

    out = {}
    for klass in reversed(cls.__mro__):
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.default is not p.empty and p.name != "tokenizer":
                out[p.name] = p.default
    return out


def write_record(out: Path, config: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=1, default=str))


def check_resume(run_dir: Path, config: dict) -> None:
    """Refuse to resume the run in ``run_dir`` with ``config`` unless both share their
    ``identity``; a directory without a record (no run, or one from before records) passes."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        return
    old, new = _flat(identity(json.loads(path.read_text()))), _flat(identity(config))
    keys = ["method"] if old["method"] != new["method"] else list(dict.fromkeys([*old, *new]))
    diff = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
    if diff:
        raise ValueError(
            f"--resume: {run_dir} holds a run made with other settings ({'; '.join(diff)}); "
            "resume with the same settings or use another --out"
        )


def _flat(tree: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``, so that a refusal names only what differs."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def effective_config(cfg) -> dict:
    """The stage config as run: the method's rewards and ``grpo_args`` defaults filled in."""
    return dataclasses.asdict(effective_stage(cfg))


def effective_stage(cfg):
    """``cfg`` (a grpo stage config) with the method's rewards, their options and its
    ``grpo_args`` defaults filled in."""
    from stepprune.rl.methods import method_grpo_args, reward_names, reward_options

    grpo_args = method_grpo_args(cfg.method, cfg.grpo_args)
    return dataclasses.replace(
        cfg,
        reward_funcs=reward_names(cfg),
        extra_rewards=[],  # now among reward_funcs
        reward_kwargs=reward_options(cfg),
        grpo_args=grpo_args,
    )
