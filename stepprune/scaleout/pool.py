"""A Ray Data actor pool whose actors write shards: the same rows as a local run, resumable.

A ``worker`` describes one engine: ``dataset(ray)`` streams its units of work, ``setup()`` loads
the engine in the actor, ``items(batch)`` turns a unit into work items, ``key(item)`` gives an
item's output key and ``worker(items)`` yields lists of rows. Every actor writes its rows into
``out`` under its own tag (``ray-<12 hex>``, new for every actor process), so actors never share
a file and the output has the local run's schema and keys. Before each unit an actor drops the
keys ``out`` already holds (shards are immutable once visible, so it reads only the new ones),
so a unit that Ray resends after losing an actor is redone only where its rows were not
flushed: never twice. Rows are flushed every ``flush_seconds`` inside a unit and at its end, so
a lost actor loses at most that buffer, and a rerun skips every key any actor finished. Actors
report each row list as it is written, so the driver's one progress bar moves per row with the
cluster's tokens/s.
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

# map_batches' own parameters: a remote arg of that name would collide with ours.
OWN_ARGS = {"fn", "compute", "batch_size", "batch_format", "fn_constructor_kwargs", "concurrency"}


class ShardActor:
    """One engine of the pool, called by Ray Data with units of its worker's dataset."""

    def __init__(self, worker, out: str, schema, writer_kwargs: dict):
        self.worker, self.out, self.schema = worker, out, schema
        self.tag = f"ray-{uuid.uuid4().hex[:12]}"
        self.writer_kwargs = writer_kwargs
        self.done: set[tuple] = set()
        self.seen: set[str] = set()
        worker.setup()

    def _refresh_done(self) -> None:
        from stepprune.shards import read_table, shard_files

        for path in shard_files(self.out) if Path(self.out).is_dir() else []:
            if path.name not in self.seen:
                keys = read_table(path, self.schema, columns=list(self.schema.key)).to_pylist()
                self.done.update(tuple(k[c] for c in self.schema.key) for k in keys)
                self.seen.add(path.name)

    def __call__(self, batch):
        import numpy as np

        from stepprune.shards import ShardWriter

        unit_start = time.time()
        self._refresh_done()
        todo = [i for i in self.worker.items(batch) if self.worker.key(i) not in self.done]
        with ShardWriter(self.out, self.schema, tag=self.tag, **self.writer_kwargs) as writer:
            for rows in self.worker(todo):
                writer.write(rows)
                writer.maybe_flush()
                count = getattr(self.worker, "tokens", None)
                tokens = count(rows) if count else sum(r["n_tokens"] for r in rows)
                yield {
                    "rows": np.array([len(rows)]),
                    "tokens": np.array([tokens]),
                    "time": np.array([unit_start]),
                }


def remote_args(worker, opts, ray) -> dict:
    """Ray options per actor: the user's, plus one GPU each on a GPU cluster, or for tensor
    parallel a placement group of ``tp`` one-GPU bundles per actor (``pool_groups``)."""
    remote = dict(opts.ray_remote_args)
    clash = OWN_ARGS & set(remote)
    if clash:
        raise ValueError(f"ray_remote_args: {sorted(clash)} are set by stepprune itself")
    tp = getattr(worker, "gpus_per_engine", 1)
    if tp > 1:
        if remote.get("num_gpus"):
            raise ValueError(
                f"ray_remote_args num_gpus with {tp} GPUs per engine: the engine's own workers "
                "hold the GPUs of the actor's placement group; leave num_gpus out"
            )
        remote["num_gpus"] = 0
    elif "num_gpus" not in remote and ray.cluster_resources().get("GPU", 0) > 0:
        remote["num_gpus"] = 1  # else every actor would see, and use, every GPU
    return remote


class GroupPicker:
    """``ray_remote_args_fn`` for tensor parallel: a starting (or restarted) actor gets a
    placement group whose GPUs are all free, so a restart reuses the group its dead actor left."""

    def __init__(self, groups: list, gpus: int):
        self.groups, self.gpus, self.next = groups, gpus, 0

    def __call__(self) -> dict:
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        free = ray.available_resources()
        idle = [g for g in self.groups if free.get(f"GPU_group_{g.id.hex()}", 0) >= self.gpus]
        group = idle[0] if idle else self.groups[self.next % len(self.groups)]
        self.next += 1
        strategy = PlacementGroupSchedulingStrategy(group, placement_group_capture_child_tasks=True)
        return {"scheduling_strategy": strategy}


def run_pool(
    worker, out, schema, opts, *, total: int, batch_size: int, writer_kwargs: dict, desc: str
) -> float:
    """Run ``worker`` on ``opts.actors`` Ray actors writing into ``out``; returns the seconds
    from the first unit an actor started to the last rows written (engine loads excluded)."""
    from stepprune.scaleout.cluster import connect

    ray = connect(opts.ray_address)
    ray.data.DataContext.get_current().enable_progress_bars = False  # ours counts tokens
    remote = remote_args(worker, opts, ray)
    out = str(Path(out).resolve())
    for orphan in Path(out).glob(".tmp-ray-*"):  # left by actors of a killed run; we hold the lock
        orphan.unlink(missing_ok=True)
    gpus = getattr(worker, "gpus_per_engine", 1)
    groups = []
    if gpus > 1:
        from ray.util.placement_group import placement_group

        groups = [
            placement_group([{"GPU": 1, "CPU": 1}] * gpus, strategy="STRICT_PACK")
            for _ in range(opts.actors)
        ]
        remote["ray_remote_args_fn"] = GroupPicker(groups, gpus)
    try:
        results = worker.dataset(ray).map_batches(
            ShardActor,
            batch_size=batch_size,
            # one unit in flight per actor: a free engine takes the next unit
            compute=ray.data.ActorPoolStrategy(size=opts.actors, max_tasks_in_flight_per_actor=1),
            fn_constructor_kwargs=dict(
                worker=worker, out=out, schema=schema, writer_kwargs=writer_kwargs
            ),
            **remote,
        )
        seconds = _drain(results, total, f"{desc} ({opts.actors} actors)")
    finally:
        for group in groups:
            ray.util.remove_placement_group(group)
    _check_unique(out, schema)
    return seconds


def _drain(results, total: int, desc: str) -> float:
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="row", desc=desc, dynamic_ncols=True)
    first = last = None
    n_tok = 0
    for result in results.iter_batches(batch_size=None):
        bar.update(int(result["rows"].sum()))
        n_tok += int(result["tokens"].sum())
        first = min(result["time"].min(), first or float("inf"))
        last = time.time()
        bar.set_postfix(tok_s=f"{n_tok / max(last - first, 1e-9):.1f}")
    bar.close()
    return 0.0 if first is None else last - first


def _check_unique(out: str, schema) -> None:
    """A shared filesystem that hid a fresh shard from an actor would show up here."""
    from stepprune.shards import count_rows, existing_keys

    rows, keys = count_rows(out), len(existing_keys(out, schema))
    if rows != keys:
        raise RuntimeError(f"{out}: {rows} rows for {keys} keys after the Ray run")
