"""Method presets: each a named set of rewards, trainer extensions and GRPO sampling defaults.

A preset only fills what the stage config leaves open: ``reward_funcs`` None takes the
method's rewards, its ``grpo_args`` sit under the recipe's (the recipe's keys win), and
``method_kwargs[<extension>]`` overrides an extension's defaults. A *sequence* (``eg``) runs
several methods in order, each stage starting from the previous stage's final model.

| method | rewards | advantage | sampling defaults |
|---|---|---|---|
| se | correctness, skip_ratio, skip_count, length | TRL's group-normalised | TRL's |
| eg-compress | eg_compress | positive-only absolute (A = beta R) | T 0.6, top_p 0.95 |
| eg-explore | eg_format, eg_answer, eg_length | TRL's (R - mean) / std | T 1.0, top_p 1.0 |
| ceeh, ceeh-ea | ceeh_correctness, ceeh_length | mean-centred (Dr.GRPO) | T 0.6, 12 rollouts |
| kimi | eg_answer, kimi_length | TRL's group-normalised | TRL's |
| shorterbetter | sb_correctness, sb_length | TRL's group-normalised | T 0.9, KL beta 0.001 |
| thinkprune-1/2/3 | thinkprune (L 4000, 3000, 2000) | TRL's | KL beta 0.001, cap L |

The length-reward methods' formulas and the source of every constant are in
``rl.length_rewards``; ``thinkprune`` runs its three stages in order, each from the last one's
model. A preset's ``reward_kwargs`` are defaults under the recipe's, merged per reward.

Both EG stages use the DAPO token-level loss and no KL term (the paper names none). CEEH maps
the authors' verl settings onto GRPOConfig: ``scale_rewards: none`` (no std division), ``beta``
0.001 (their low_var_kl is TRL's k3 estimator), ``epsilon_high`` 0.28, ``loss_type: dapo``
(token mean), and ``delta`` 3.0, TRL's two-sided clipping, which for a negative advantage caps
the ratio at 3 exactly as verl's dual clip (clip_ratio_c 3.0) does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stepprune.rl.registry import PAPER_REWARDS

EG_SAMPLING = {"loss_type": "dapo", "beta": 0.0}
CEEH_ARGS = {
    **{"scale_rewards": "none", "beta": 0.001, "epsilon": 0.2, "epsilon_high": 0.28},
    **{"delta": 3.0, "loss_type": "dapo", "num_generations": 12, "temperature": 0.6},
    **{"top_p": 1.0, "per_device_train_batch_size": 12},  # one question's rollouts per step
}


def group_length(rule: str, correctness: str, length: str) -> dict:
    return {"rule": rule, "correctness": correctness, "length": length}


def thinkprune_stage(i: int, limit: int) -> Method:
    """ThinkPrune's stage i: length limit L for the reward and the generation cap."""
    return Method(
        f"thinkprune-{i}",
        ("thinkprune",),
        {"beta": 0.001, "max_completion_length": limit},
        reward_kwargs={"thinkprune": {"max_tokens": limit}},
    )


@dataclass(frozen=True)
class Method:
    name: str
    rewards: tuple[str, ...]
    grpo_args: dict = field(default_factory=dict)
    extensions: dict = field(default_factory=dict)  # extension name -> default options
    stateful: bool = False  # keeps per-question state: needs unique question ids
    reward_kwargs: dict = field(default_factory=dict)  # reward name -> default options


METHODS = {
    m.name: m
    for m in (
        Method("se", PAPER_REWARDS),
        Method(
            "eg-compress",
            ("eg_compress",),
            {**EG_SAMPLING, "temperature": 0.6, "top_p": 0.95},
            {"positive_absolute": {}, "rollout_stats": {}},
        ),
        Method(
            "eg-explore",
            ("eg_format", "eg_answer", "eg_length"),
            {**EG_SAMPLING, "temperature": 1.0, "top_p": 1.0, "scale_rewards": "group"},
            {"rollout_stats": {}},
        ),
        Method(
            "ceeh",
            ("ceeh_correctness", "ceeh_length"),
            CEEH_ARGS,
            {"ceeh": {"mode": "me", "schedule": "cosine"}, "rollout_stats": {}},
            stateful=True,
        ),
        Method(
            "ceeh-ea",
            ("ceeh_correctness", "ceeh_length"),
            CEEH_ARGS,
            {"ceeh": {"mode": "ea", "schedule": "constant"}, "rollout_stats": {}},
            stateful=True,
        ),
        Method(
            "kimi",
            ("eg_answer", "kimi_length"),
            extensions={"group_length": group_length("kimi", "eg_answer", "kimi_length")},
        ),
        Method(
            "shorterbetter",
            ("sb_correctness", "sb_length"),
            {"beta": 0.001, "temperature": 0.9},
            {"group_length": group_length("shorterbetter", "sb_correctness", "sb_length")},
        ),
        *(thinkprune_stage(i, limit) for i, limit in enumerate((4000, 3000, 2000), start=1)),
    )
}
SEQUENCES = {
    "eg": ("eg-compress", "eg-explore"),
    "thinkprune": ("thinkprune-1", "thinkprune-2", "thinkprune-3"),
}


def check_method(name: str) -> None:
    if name not in METHODS and name not in SEQUENCES:
        known = ", ".join([*METHODS, *SEQUENCES])
        raise ValueError(f"unknown method {name!r}; known: {known}")


def method_grpo_args(name: str, grpo_args: dict) -> dict:
    """The method's sampling defaults under the recipe's ``grpo_args`` (the recipe wins)."""
    return {**METHODS[name].grpo_args, **grpo_args}


def extension_class(name: str) -> type:
    from stepprune.rl.ceeh import CEEH
    from stepprune.rl.eg import PositiveAbsolute, RolloutStats
    from stepprune.rl.length_rewards import GroupLength

    classes = {"positive_absolute": PositiveAbsolute, "rollout_stats": RolloutStats}
    classes |= {"ceeh": CEEH, "group_length": GroupLength}
    return classes[name]


def build_extensions(name: str, options: dict, rewards: list) -> list:
    """The method's trainer extensions, wired to its reward instances."""
    method = METHODS[name]
    stray = sorted(set(options) - set(method.extensions))
    if stray:
        raise ValueError(f"method_kwargs for {stray}: method {name} has {list(method.extensions)}")
    by_name = {r.name: r for r in rewards}
    built = []
    for ext, defaults in method.extensions.items():
        kwargs = {**defaults, **(options.get(ext) or {})}
        if ext == "rollout_stats":
            clip = by_name.get("eg_compress") or by_name.get("eg_length")
            kwargs.setdefault("max_tokens", getattr(clip, "max_tokens", None))
        try:
            extension = extension_class(ext)(**kwargs)
        except TypeError as e:
            raise ValueError(f"method_kwargs.{ext}: bad options {sorted(kwargs)} ({e})") from e
        if ext in ("ceeh", "group_length"):  # they fill or read reward columns by name
            for needed in (extension.correctness, extension.length):
                if needed not in by_name:
                    raise ValueError(f"{ext} needs the reward {needed!r} in reward_funcs")
        if ext == "ceeh" and "correct_value" not in kwargs:
            extension.correct_value = by_name[extension.correctness].correct
        built.append(extension)
    return built


def reward_names(cfg) -> list[str]:
    """A stage config's rewards: its ``reward_funcs``, else its method's; then its
    ``extra_rewards`` (e.g. soft_overlong beside any method)."""
    names = list(cfg.reward_funcs or METHODS[cfg.method].rewards)
    extra = list(getattr(cfg, "extra_rewards", None) or [])
    twice = sorted(set(names) & set(extra))
    if twice:
        raise ValueError(f"extra_rewards {twice} are already among the rewards {names}")
    return names + extra


def reward_options(cfg) -> dict:
    """The rewards' options: the method's defaults for its rewards in use, under the recipe's
    ``reward_kwargs`` (merged per reward, the recipe's keys win)."""
    names = set(reward_names(cfg))
    defaults = {k: v for k, v in METHODS[cfg.method].reward_kwargs.items() if k in names}
    given = cfg.reward_kwargs or {}
    return {k: {**defaults.get(k, {}), **(given.get(k) or {})} for k in {*defaults, *given}}


def check_method_inputs(cfg, args, dataset) -> None:
    """What the method's extensions need, checked before any model loads: a question id column
    (unique for per-question state), state saved only at generation boundaries, and TRL's
    all-token entropy bonus off for CEEH."""
    method = METHODS[cfg.method]
    column = cfg.question_id_column
    if method.extensions and column not in dataset.column_names:
        raise ValueError(f"question_id_column {column!r} is not a dataset column")
    if cfg.method.startswith("ceeh") and args.entropy_coef:
        raise ValueError(
            "grpo_args.entropy_coef: TRL's entropy bonus acts on every token; CEEH's acts on "
            "hard questions only (method_kwargs.ceeh.coef). Leave entropy_coef at 0."
        )
    if not method.stateful:
        return
    if args.num_iterations != 1 or args.steps_per_generation != args.gradient_accumulation_steps:
        raise ValueError(
            f"{cfg.method} keeps per-question state updated once per generation: it needs "
            "num_iterations 1 and steps_per_generation = gradient_accumulation_steps, so that "
            "every checkpoint falls between generations and a resume updates nothing twice"
        )
    seen: set = set()
    for i, value in enumerate(dataset[column]):
        if value is None or value in seen:
            raise ValueError(
                f"{cfg.problems}: row {i}: question id {value!r} is missing or repeated"
            )
        seen.add(value)
