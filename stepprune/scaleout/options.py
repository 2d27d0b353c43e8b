"""Executor settings shared by the stages that generate or score: local or a Ray actor pool."""

from __future__ import annotations

from dataclasses import dataclass, field

EXECUTORS = ("local", "ray")


@dataclass
class ExecutorOptions:
    """Where the engine runs. ``local``: this process (``--num-shards`` splits it by hand).
    ``ray``: a Ray Data pool of ``actors`` engines on the cluster at ``ray_address`` (None: the
    ``RAY_ADDRESS`` cluster, else one on this machine, else a Ray started here).
    ``ray_remote_args`` go to each actor as given (``num_cpus``, ``num_gpus``, ``memory``,
    ``resources``, ``runtime_env``, ``max_restarts``, ...); a vLLM engine with tensor or pipeline
    parallelism gets a placement group instead of ``num_gpus`` (``scaleout.pool``)."""

    executor: str = "local"
    ray_address: str | None = None
    actors: int = 2
    ray_remote_args: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor {self.executor!r}: expected one of {', '.join(EXECUTORS)}")
        if self.actors < 1:
            raise ValueError(f"actors must be >= 1, got {self.actors}")
