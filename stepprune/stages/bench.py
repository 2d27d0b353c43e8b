"""The bench stage: trained models against their base, the way the papers report them.

For every (model, benchmark) it runs the generate stage as it is into
``out/generations/<model>/<benchmark>`` (resumable: a rerun skips finished rows and pairs), then
builds the tables and plots from those shards (``stepprune.evaluation.bench_report``). Every
model, benchmark and name is checked before any generation: a tokenizer that cannot be loaded, a
benchmark that does not exist, or a name given twice is a one-line error.

Timing: each generate call's wall time (engine start excluded) and the rows and tokens it made
are added to ``timing.json`` beside its shards, so time per problem and tokens/s survive a resume;
rows made by a killed run carry no time and are left out of those two figures.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass, field, fields
from pathlib import Path

from stepprune.evaluation.baselines import generate_overrides
from stepprune.evaluation.bench_layout import (
    benchmark_name,
    check_entry_name,
    counted_rows,
    pair_dir,
)
from stepprune.evaluation.bench_layout import saved_rows as saved_rows
from stepprune.evaluation.efficiency import MARKERS
from stepprune.generation.sampling import SamplingOptions
from stepprune.scaleout.options import ExecutorOptions

log = logging.getLogger(__name__)


@dataclass
class BenchConfig(SamplingOptions, ExecutorOptions):
    models: list = field(default_factory=list)  # "name=model" (a path, hub id or packaged name)
    baselines: list = field(default_factory=list)  # "name=spec": evaluation/baselines.py
    base: str | None = None  # the name of the base model (None: the first)
    benchmarks: list = field(default_factory=lambda: ["gsm8k"])  # built-in sets or files
    limit: int | None = None  # the first N problems of each benchmark
    out: str = "runs/bench"
    data_dir: str | None = None
    bootstrap: int = 1000
    ci_level: float = 0.95
    # steps opening with one of these count as reflection (evaluation/efficiency.py)
    reflection_markers: list = field(default_factory=lambda: list(MARKERS))

    def __post_init__(self) -> None:
        super().__post_init__()
        ExecutorOptions.__post_init__(self)
        # A recipe may leave the models to flags (--model); run() refuses an empty list.
        named = self.named_models() if self.models else {}
        if self.base is not None and named and self.base not in named:
            raise ValueError(f"base {self.base!r} is not one of the models {list(named)}")
        if not self.benchmarks:
            raise ValueError("bench needs at least one benchmark")
        if len(set(self.benchmarks)) != len(self.benchmarks):
            raise ValueError(f"a benchmark is given twice: {self.benchmarks}")
        if named:
            self.entry_names()  # baselines parse, their names are free, match= names a model

    def named_baselines(self) -> dict:
        """name -> Baseline, in the given order (one-line errors for a bad spec)."""
        from stepprune.evaluation.baselines import parse_baseline

        out = {}
        for item in self.baselines:
            b = parse_baseline(item)
            if b.name in out:
                raise ValueError(f"baseline name {b.name!r} is given twice")
            out[b.name] = b
        return out

    def entry_names(self) -> list[str]:
        """Every row of the tables: the models, then the baselines."""
        models, baselines = self.named_models(), self.named_baselines()
        for b in baselines.values():
            if b.name in models:
                raise ValueError(f"baseline name {b.name!r} is also a model name")
            if b.match is not None and b.match not in models:
                raise ValueError(f"baseline {b.name}: budget:match={b.match} names no model")
        return [*models, *baselines]

    def named_models(self) -> dict[str, str]:
        """name -> model, in the given order; names must be unique path-safe words
        (``bench_layout.check_entry_name``)."""
        if not self.models:
            raise ValueError("bench needs models: --model base=MODEL --model trained=PATH ...")
        named: dict[str, str] = {}
        for item in self.models:
            name, sep, model = str(item).partition("=")
            name, model = name.strip(), model.strip()
            if not sep or not name or not model:
                raise ValueError(f"model {item!r}: expected name=model")
            check_entry_name("model", name)
            if name in named:
                raise ValueError(f"model name {name!r} is given twice")
            named[name] = model
        return named

    @property
    def base_name(self) -> str:
        return self.base or next(iter(self.named_models()))


def check_inputs(cfg: BenchConfig) -> dict[str, str]:
    """Every model's tokenizer and every benchmark load (a one-line error otherwise); returns
    name -> resolved model path."""
    from transformers import AutoTokenizer

    from stepprune.data.load import load_problems
    from stepprune.models import resolve_model

    names = [benchmark_name(b) for b in cfg.benchmarks]
    if len(set(names)) != len(names):
        raise ValueError(f"two benchmarks share a name: {names}")
    for source in cfg.benchmarks:
        if not load_problems(source, data_dir=cfg.data_dir, limit=cfg.limit):
            raise ValueError(f"benchmark {source!r} has no problems")
    resolved = {}
    for name, model in cfg.named_models().items():
        path = resolve_model(model)
        try:
            AutoTokenizer.from_pretrained(path)
        except Exception as e:  # any loading failure is the same user error
            raise ValueError(f"model {name}={model}: its tokenizer cannot be loaded ({e})") from e
        weights = ("*.safetensors", "*.bin", "*.safetensors.index.json")
        if Path(path).is_dir() and not any(any(Path(path).glob(w)) for w in weights):
            raise ValueError(f"model {name}={model}: no weights (*.safetensors or *.bin) in {path}")
        resolved[name] = path
    return resolved


def generate_config(cfg: BenchConfig, model: str, source: str, out: Path, **overrides):
    """The generate stage's config for one (model, benchmark): bench's sampling options, with a
    baseline's ``overrides``."""
    from stepprune.stages.generate import GenerateConfig

    names = [f.name for f in (*fields(SamplingOptions), *fields(ExecutorOptions))]
    shared = {name: copy.deepcopy(getattr(cfg, name)) for name in names}
    shared.update(overrides)
    return GenerateConfig(
        problems=source,
        model=model,
        out=str(out),
        data_dir=cfg.data_dir,
        limit=cfg.limit,
        **shared,
    )


def run(cfg: BenchConfig) -> dict:
    from stepprune.evaluation.bench_report import write_report
    from stepprune.scaleout.cluster import connect_first
    from stepprune.stages import generate

    models = cfg.named_models()
    connect_first(cfg)
    check_inputs(cfg)
    for name, model in models.items():
        for source in cfg.benchmarks:
            _generate(generate, generate_config(cfg, model, source, _pair(cfg, name, source)))
    base_model = models[cfg.base_name]
    baselines = cfg.named_baselines()
    style = _thinking_style(cfg, base_model) if baselines else None
    for name, b in baselines.items():
        for source in cfg.benchmarks:
            budget = _mean_thinking(cfg, b.match, source) if b.match else None
            overrides = generate_overrides(b, style, budget)
            out = _pair(cfg, name, source)
            _generate(generate, generate_config(cfg, base_model, source, out, **overrides))
    return write_report(cfg)


def _pair(cfg, name: str, source: str) -> Path:
    return pair_dir(cfg.out, name, benchmark_name(source))


def _generate(generate, gen_cfg) -> None:
    out = Path(gen_cfg.out)
    before = _rows_and_tokens(out)
    summary = generate.run(gen_cfg)
    if "generation_seconds" in summary:
        _add_timing(out, summary["generation_seconds"], before, _rows_and_tokens(out))


def _thinking_style(cfg, model: str) -> str:
    from transformers import AutoTokenizer

    from stepprune.evaluation.baselines import thinking_style
    from stepprune.models import resolve_model

    return thinking_style(AutoTokenizer.from_pretrained(resolve_model(model)), cfg.system_prompt)


def _mean_thinking(cfg, model: str, source: str) -> float:
    """A model's mean thinking tokens on one benchmark, over the rows the tables count (this
    run's limit and n_samples), so a resume with the same settings gets the same budget."""
    rows = counted_rows(cfg, model, source, ["n_thinking_tokens"])
    if not rows.height:
        raise ValueError(f"budget:match={model}: {model} has no rows on {source} to match")
    return float(rows["n_thinking_tokens"].mean())


def _rows_and_tokens(out: Path) -> tuple[int, int]:
    from stepprune.schema import GENERATIONS
    from stepprune.shards import read_table

    if not out.is_dir():
        return 0, 0
    table = read_table(out, GENERATIONS, columns=["n_tokens"])
    return table.num_rows, int(sum(table["n_tokens"].to_pylist()))


def _add_timing(out: Path, seconds: float, before: tuple, after: tuple) -> None:
    path = out / "timing.json"
    timing = json.loads(path.read_text()) if path.exists() else {"seconds": 0.0, "rows": 0}
    timing.setdefault("tokens", 0)
    timing["seconds"] += seconds
    timing["rows"] += after[0] - before[0]
    timing["tokens"] += after[1] - before[1]
    path.write_text(json.dumps(timing))
