"""Pipeline stages. Each stage module defines a ``*Config`` dataclass and ``run(config) -> dict``
(the summary it reports); the CLI only builds the config, calls ``run`` and prints the summary.
"""

from __future__ import annotations

import importlib

# Recipe file names start with their stage: pipelines/generate_*.yaml fill GenerateConfig.
CONFIGS = {
    "generate": "stepprune.stages.generate:GenerateConfig",
    "score": "stepprune.stages.score:ScoreConfig",
    "prune": "stepprune.stages.prune:PruneConfig",
    "eval": "stepprune.stages.eval:EvalConfig",
    "sft": "stepprune.stages.sft:SFTStageConfig",
    "grpo": "stepprune.stages.grpo:GRPOStageConfig",
    "bench": "stepprune.stages.bench:BenchConfig",
}


def config_class(stage: str):
    if stage not in CONFIGS:
        raise ValueError(f"unknown stage {stage!r}; known: {sorted(CONFIGS)}")
    module, _, name = CONFIGS[stage].partition(":")
    return getattr(importlib.import_module(module), name)
