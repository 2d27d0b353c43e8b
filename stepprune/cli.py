"""The ``stepprune`` command line: thin typer commands that build a config, run a stage, report.

Heavy libraries (torch, transformers, vLLM) are imported inside the stages, never here, so
``stepprune --help`` stays instant. Every option overrides the ``--recipe`` YAML, and
``--set key=value`` (YAML value) reaches any config field without a dedicated flag.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import typer
from typer.core import TyperGroup


class DefaultsGroup(TyperGroup):
    """Commands whose ``--help`` shows each option's default from its stage config."""

    def get_command(self, ctx, cmd_name):
        from stepprune.config_docs import FLAG_FIELDS, show_defaults
        from stepprune.stages import CONFIGS, config_class

        command = super().get_command(ctx, cmd_name)
        if command is not None and cmd_name in CONFIGS:
            show_defaults(config_class(cmd_name), command, FLAG_FIELDS.get(cmd_name))
        return command


app = typer.Typer(
    cls=DefaultsGroup,
    help="Step-entropy chain-of-thought compression: generate, score, prune, eval, sft, grpo, "
    "bench.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

RecipeOpt = typer.Option(None, "--recipe", "-r", help="YAML recipe in pipelines/; flags override.")
SetOpt = typer.Option(
    None,
    "--set",
    help="Any config field: --set key=value (YAML value); a.b=v sets b inside the mapping a.",
)
ExecutorOpt = typer.Option(None, help="local (this process) | ray (a Ray Data actor pool).")
RayAddressOpt = typer.Option(None, help="Ray cluster host:port (default: $RAY_ADDRESS or local).")
ActorsOpt = typer.Option(None, help="With --executor ray: engines (actors) in the pool.")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def _parse_sets(sets: list[str] | None) -> dict:
    import yaml

    out = {}
    for item in sets or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--set expects key=value, got {item!r}")
        try:
            head, dot, rest = key.strip().partition(".")  # a dotted key's inner names stay
            out[head.replace("-", "_") + dot + rest] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise typer.BadParameter(f"--set {item!r}: the value is not valid YAML") from e
    return out


def _is_main_process() -> bool:
    """False on every process but the first of a multi-process launch (torchrun's RANK)."""
    import os

    return os.environ.get("RANK", "0") == "0"


# What users run next, printed after a stage ({out}: this run's output).
NEXT = {
    "generate": "stepprune prune -i {out} --kappa 0.8  (or stepprune eval -i {out})",
    "score": "stepprune prune -i {out} --kappa 0.8",
    "prune": "stepprune sft -i {out}",
    "sft": "stepprune grpo --model {out} ...  or  stepprune bench --model trained={out} ...",
    "grpo": "stepprune bench --model trained={out} ...",
}


def _hint(stage: str, out: str) -> None:
    if stage in NEXT:
        typer.echo(f"next: {NEXT[stage].format(out=out)}")


def _fail(err: Exception) -> None:
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def _run_stage(stage: str, flags: dict, recipe: Path | None, sets: list[str] | None, verbose: bool):
    """Build the stage's config (defaults < recipe < flags < --set), run it; (config, summary)."""
    _setup_logging(verbose)
    import importlib

    from stepprune.config import build_config
    from stepprune.stages import config_class

    try:
        cfg = build_config(config_class(stage), recipe, **{**flags, **_parse_sets(sets)})
        cfg.out = str(cfg.out)
        stage_module = importlib.import_module(f"stepprune.stages.{stage}")
        with _stoppable(stage, cfg.out):
            summary = stage_module.run(cfg)
    except (ValueError, OSError, _run_locked_error()) as e:  # one line, no traceback
        _fail(e)
    return cfg, summary


def _run_locked_error():
    from stepprune.runlock import RunLockedError

    return RunLockedError


class Stopped(BaseException):
    """SIGTERM (a scheduler's preemption) arrived during a resumable stage. A BaseException,
    like KeyboardInterrupt, so that no ``except Exception`` on the way (the grader's) eats it."""


# Stages whose buffered rows are flushed on SIGTERM/SIGINT and which resume from their output.
RESUMABLE = ("generate", "score", "eval", "bench")


def _saved_rows(stage: str, out: str) -> int:
    """Rows a resumable stage has on disk, as the stage counts them."""
    import importlib

    return importlib.import_module(f"stepprune.stages.{stage}").saved_rows(out)


@contextlib.contextmanager
def _stoppable(stage: str, out: str):
    """For a resumable stage: turn SIGTERM into an exception (so buffered rows are flushed on
    the way out, like Ctrl-C), then exit non-zero with one line saying what was saved."""
    if stage not in RESUMABLE:
        yield
        return
    import signal

    before = _saved_rows(stage, out)

    def stop(signum, frame):
        raise Stopped(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    except (Stopped, KeyboardInterrupt) as e:
        name = str(e) if isinstance(e, Stopped) else "SIGINT"
        saved = _saved_rows(stage, out)
        typer.secho(
            f"error: stopped by {name}: {saved - before} new rows saved ({saved} in {out}); "
            "rerun the same command to resume",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(143 if name == "SIGTERM" else 130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def _flags(scope: dict) -> dict:
    return {k: v for k, v in scope.items() if k not in ("recipe", "sets", "verbose")}


@app.command()
def generate(
    problems: str = typer.Option(None, help="Built-in set name, a JSONL/Parquet file, or hub:id."),
    out: Path = typer.Option(None, help="Output directory of generations shards."),
    model: str = typer.Option(None, help="Model path or id; default: embedded SmolLM2-135M."),
    backend: str = typer.Option(None, help="hf (exact entropy) or vllm (top-k + bounds)."),
    data_dir: str = typer.Option(None, help="Where built-in sets live (or $STEPPRUNE_DATA_DIR)."),
    limit: int = typer.Option(None, help="Use only the first N problems."),
    n_samples: int = typer.Option(None, help="Samples per problem."),
    greedy: bool = typer.Option(None, "--greedy/--sample", help="Greedy decoding."),
    temperature: float = typer.Option(None),
    top_p: float = typer.Option(None),
    max_new_tokens: int = typer.Option(None),
    batch_size: int = typer.Option(None),
    seed: int = typer.Option(None),
    dtype: str = typer.Option(None, help="auto | float32 | bfloat16 | float16"),
    num_shards: int = typer.Option(None, help="Split the problems N ways (multi-GPU/node)."),
    shard_index: int = typer.Option(None, help="Which split this process runs."),
    rescore: bool = typer.Option(None, "--rescore/--no-rescore", help="Exact entropy after vllm."),
    problem_field: str = typer.Option(None),
    answer_field: str = typer.Option(None),
    id_field: str = typer.Option(None),
    executor: str = ExecutorOpt,
    ray_address: str = RayAddressOpt,
    actors: int = ActorsOpt,
    recipe: Path = RecipeOpt,
    sets: list[str] = SetOpt,
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Generate chains of thought with per-token entropy and steps into Parquet shards."""
    cfg, summary = _run_stage("generate", _flags(locals()), recipe, sets, verbose)
    from stepprune.cot.summary import format_summary

    typer.echo(format_summary(summary))
    typer.echo(f"shards: {cfg.out}")
    _hint("generate", cfg.out)


@app.command()
def score(
    input: str = typer.Option(None, "--input", "-i", help="Generations shards or a CoT file."),
    out: Path = typer.Option(None, help="Output directory of rescored generations shards."),
    model: str = typer.Option(None, help="Scoring model; default: embedded SmolLM2-135M."),
    dtype: str = typer.Option(None),
    completion_field: str = typer.Option(None, help="CoT file: the completion text field."),
    problem_field: str = typer.Option(None),
    answer_field: str = typer.Option(None),
    id_field: str = typer.Option(None),
    executor: str = ExecutorOpt,
    ray_address: str = RayAddressOpt,
    actors: int = ActorsOpt,
    recipe: Path = RecipeOpt,
    sets: list[str] = SetOpt,
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Exact teacher-forced entropy for existing CoTs (a vLLM top-k run, or any CoT file)."""
    cfg, summary = _run_stage("score", _flags(locals()), recipe, sets, verbose)
    from stepprune.cot.summary import format_summary

    typer.echo(format_summary(summary))
    typer.echo(f"shards: {cfg.out}")
    _hint("score", cfg.out)


@app.command()
def problems(
    name: str = typer.Argument(None, help="Show this set; omit to list the built-in sets."),
    data_dir: str = typer.Option(None),
    limit: int = typer.Option(3),
) -> None:
    """List the built-in problem sets, or show the first problems of one."""
    from stepprune.data import load as data

    if name is None:
        for n in data.builtin_names():
            typer.echo(n)
        return
    try:
        for p in data.load_problems(name, data_dir=data_dir, limit=limit):
            typer.echo(json.dumps(p.__dict__, ensure_ascii=False))
    except (ValueError, OSError) as e:
        _fail(e)


@app.command()
def prune(
    input: str = typer.Option(None, "--input", "-i", help="Generations shards (dir or file)."),
    out: Path = typer.Option(None, help="Output directory of pruned shards."),
    kappa: str = typer.Option(
        None, help="Fraction of steps to prune, in [0, 1]; or 'verified' (with --eval)."
    ),
    eval: str = typer.Option(None, "--eval", help="With --kappa verified: an eval run."),
    strategy: str = typer.Option(
        None,
        help="low (paper) | high | random | token | random-matched | high-matched | answer-first",
    ),
    score: str = typer.Option(None, help="Step score: sum (default) | mean | sampled | surprisal."),
    budget: str = typer.Option(None, help="steps (floor(kappa*N) steps) or tokens."),
    protect_ends: bool = typer.Option(None, "--protect-ends/--no-protect-ends"),
    merge_skips: bool = typer.Option(None, "--merge-skips/--no-merge-skips"),
    seed: int = typer.Option(None),
    correct_only: bool = typer.Option(None, "--correct-only/--all"),
    max_tokens: int = typer.Option(None, help="Drop CoTs longer than this many tokens."),
    overwrite: bool = typer.Option(None, "--overwrite/--no-overwrite"),
    recipe: Path = RecipeOpt,
    sets: list[str] = SetOpt,
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Prune the lowest-entropy steps into [SKIP]-compressed, SFT-ready shards."""
    flags = _flags(locals())
    if flags["kappa"] is not None and flags["kappa"] != "verified":
        try:
            flags["kappa"] = float(flags["kappa"])
        except ValueError:
            _fail(ValueError(f"--kappa {kappa!r}: a number in [0, 1] or 'verified'"))
    cfg, summary = _run_stage("prune", flags, recipe, sets, verbose)
    from stepprune.stages.prune import format_summary

    typer.echo(format_summary(cfg, summary))
    _hint("prune", cfg.out)


def _floats(text: str | None) -> list[float] | None:
    try:
        return None if text is None else [float(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise typer.BadParameter(f"expected comma-separated numbers, got {text!r}") from e


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [x.strip() for x in text.split(",") if x.strip()]


@app.command(name="eval")
def eval_(
    input: str = typer.Option(None, "--input", "-i", help="Generations shards (dir or file)."),
    out: Path = typer.Option(None, help="Output directory: results/, tables, plots."),
    model: str = typer.Option(None, help="Answering model; default: embedded SmolLM2-135M."),
    backend: str = typer.Option(None, help="hf or vllm."),
    dtype: str = typer.Option(None),
    kappas: str = typer.Option(None, help="Comma-separated grid, e.g. 0,0.2,0.4,0.6,0.8,1."),
    strategies: str = typer.Option(
        None,
        help="Comma-separated (default all): low,high,random,token,random-matched,high-matched,"
        "answer-first.",
    ),
    score: str = typer.Option(None, help="Step score: sum (default) | mean | sampled | surprisal."),
    random_seeds: int = typer.Option(None, help="Seeds of the random strategies (default 3)."),
    limit: int = typer.Option(None, help="Use only the first N trajectories."),
    answer_tokens: int = typer.Option(None, help="Token budget of the final answer."),
    batch_size: int = typer.Option(None),
    baseline: str = typer.Option(None, help="Generations whose length is L-Acc's L_base."),
    executor: str = ExecutorOpt,
    ray_address: str = RayAddressOpt,
    actors: int = ActorsOpt,
    recipe: Path = RecipeOpt,
    sets: list[str] = SetOpt,
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Answer from pruned chains of thought across kappa and strategies; tables and plots."""
    flags = _flags(locals())
    flags.update(kappas=_floats(kappas), strategies=_names(strategies))
    cfg, summary = _run_stage("eval", flags, recipe, sets, verbose)
    from stepprune.evaluation.report import format_report

    typer.echo(format_report(summary))
    typer.echo(f"report: {cfg.out}/summary.md")


@app.command()
def sft(
    input: str = typer.Option(None, "--input", "-i", help="Pruned shards (dir or file)."),
    out: Path = typer.Option(None, help="Output: model or adapter, tokenizer, checkpoints, card."),
    model: str = typer.Option(None, help="Base model; default: embedded SmolLM2-135M."),
    correct_only: bool = typer.Option(None, "--correct-only/--all"),
    max_tokens: int = typer.Option(None, help="Drop rows longer than this (prompt+completion)."),
    kappa: float = typer.Option(None, help="Train only on rows pruned at this kappa."),
    strategy: str = typer.Option(None, help="Train only on rows of this prune strategy."),
    unpruned_fraction: float = typer.Option(None, help="Share of rows trained unpruned."),
    seed: int = typer.Option(None),
    merge: bool = typer.Option(None, "--merge/--no-merge", help="Also write OUT/merged weights."),
    resume: bool = typer.Option(None, "--resume/--no-resume", help="Continue OUT's checkpoint."),
    overwrite: bool = typer.Option(None, "--overwrite/--no-overwrite"),
    recipe: Path = RecipeOpt,
    sets: list[str] = SetOpt,
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Fine-tune on pruned chains of thought to reason with [SKIP] (TRL SFT; LoRA optional)."""
    cfg, summary = _run_stage("sft", _flags(locals()), recipe, sets, verbose)
    if not _is_main_process():
        return
    from stepprune.stages.sft import format_summary

    typer.echo(format_summary(cfg, summary))
    _hint("sft", summary["merged"] or cfg.out)


@app.command()
def grpo(
    problems: str = typer.Option(None, help="Built-in set, problem file, hub:id or pruned shards."),
    out: Path = typer.Option(None, help="Output: checkpoints, final model, log_history, card."),
    model: str = typer.Option(None, help="Start model (an SFT checkpoint); default: SmolLM2-135M."),
    method: str = typer.Option(
        None,
        help="se (default) | eg | eg-compress | eg-explore | ceeh | ceeh-ea | kimi | "
        "shorterbetter | thinkprune",
    ),
    data_dir: str = typer.Option(None, help="Where built-in sets live (or $STEPPRUNE_DATA_DIR)."),
    limit: int = typer.Option(None, help="Use only the first N problems."),
    sample: int = typer.Option(None, help="Then train on N of them drawn at random (seeded)."),
    seed: int = typer.Option(None),
    resume: bool = typer.Option(None, "--resume/--no-resume", help="From the last checkpoint."),
    overwrite: bool = typer.Option(None, "--overwrite/--no-overwrite"),
    recipe: Path = RecipeOpt,
    sets: list[str] = SetOpt,
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """GRPO on TRL with a method: SE's skip/length reward, EG's two stages, or CEEH."""
    cfg, summary = _run_stage("grpo", _flags(locals()), recipe, sets, verbose)
    if not _is_main_process():
        return
    from stepprune.rl.report import format_summary

    typer.echo(format_summary(summary))
    typer.echo(f"model, logs and card: {cfg.out}")
    _hint("grpo", cfg.out)


@app.command()
def bench(
    model: list[str] = typer.Option(
        None, "--model", "-m", help="name=model (repeat): a path, hub id or packaged name."
    ),
    base: str = typer.Option(None, help="The base model's name (default: the first --model)."),
    baseline: list[str] = typer.Option(
        None,
        help="name=spec (repeat), run on the base: budget:N, budget:match=MODEL, nothink, "
        "prompt:cod | prompt:concise | prompt:TEXT.",
    ),
    benchmark: list[str] = typer.Option(
        None, "--benchmark", "-b", help="A built-in set or problem file (repeat)."
    ),
    out: Path = typer.Option(None, help="Output: generations per (model, benchmark), tables."),
    limit: int = typer.Option(None, help="The first N problems of each benchmark."),
    backend: str = typer.Option(None, help="hf (default) | vllm"),
    n_samples: int = typer.Option(None, help="Samples per problem (pass@1 is their mean)."),
    greedy: bool = typer.Option(None, "--greedy/--sample"),
    temperature: float = typer.Option(None),
    top_p: float = typer.Option(None),
    max_new_tokens: int = typer.Option(None),
    seed: int = typer.Option(None),
    executor: str = ExecutorOpt,
    ray_address: str = RayAddressOpt,
    actors: int = ActorsOpt,
    recipe: Path = RecipeOpt,
    sets: list[str] = SetOpt,
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Compare models the way the papers do: ACC / LEN / L-Acc, Pass@k, paired against a base."""
    flags = _flags(locals())
    flags["models"], flags["benchmarks"], flags["baselines"] = (
        flags.pop("model") or None,
        flags.pop("benchmark") or None,
        flags.pop("baseline") or None,
    )
    cfg, summary = _run_stage("bench", flags, recipe, sets, verbose)
    from stepprune.evaluation.bench_report import format_report

    typer.echo(format_report(summary))
    typer.echo(f"tables and plots: {cfg.out}")


@app.command("config")
def config_(
    stage: str = typer.Argument(..., help="generate, score, prune, eval, sft, grpo, bench."),
):
    """Print every field of STAGE's config with its default and meaning (YAML: a recipe)."""
    from stepprune.config_docs import describe
    from stepprune.stages import config_class

    try:
        cls = config_class(stage)
    except ValueError as e:
        _fail(e)
    typer.echo(f"# {stage}: every field with its default; a recipe sets any of them")
    typer.echo(describe(cls))


def _version(value: bool) -> None:
    if value:
        from stepprune import __version__

        typer.echo(f"stepprune {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Step-entropy chain-of-thought compression: generate, score, prune, eval, sft, grpo, bench."""


def main() -> None:
    from stepprune.process_group import end_process_group

    try:
        app()
    finally:
        end_process_group()  # before interpreter exit: see stepprune/process_group.py


if __name__ == "__main__":
    main()
