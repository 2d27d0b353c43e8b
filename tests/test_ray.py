"""--executor ray (issue #17) on a local Ray with two CPUs: two actors write the rows a single
process writes, a lost actor keeps its flushed rows and its batch is redone once, a rerun after
a failed run completes without duplicates, and an unreachable cluster is a one-line error."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from stepprune.schema import GENERATIONS
from stepprune.shards import read_table, shard_files

N = 6


@pytest.fixture(scope="module")
def local_ray():
    import ray

    # The wrappers below travel to the actors by value: workers cannot import a test module.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=2**28)
    yield ray
    ray.shutdown()


@pytest.fixture
def problems(tmp_path) -> Path:
    path = tmp_path / "problems.jsonl"
    rows = [{"problem": f"What is {i} plus {i}?", "answer": str(2 * i)} for i in range(N)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cfg(problems, model, out, **kw):
    from stepprune.stages.generate import GenerateConfig

    settings = dict(greedy=True, max_new_tokens=12, dtype="float32", batch_size=1)
    settings.update(kw)
    return GenerateConfig(problems=str(problems), model=str(model), out=str(out), **settings)


def _rows(out) -> dict:
    rows = read_table(out, GENERATIONS).to_pylist()
    keys = Counter((r["problem_id"], r["sample_index"]) for r in rows)
    assert max(keys.values()) == 1, f"duplicate keys: {[k for k, c in keys.items() if c > 1]}"
    return {(r["problem_id"], r["sample_index"]): r for r in rows}


FLOAT_LISTS = ("token_entropies", "token_logprobs")


def _assert_same_row(got: dict, want: dict) -> None:
    """Equal but for the write time and float noise: an actor's engine runs one torch thread,
    the local one two, and reductions in another order move the last bits."""
    for col, value in want.items():
        if col == "created_at":
            continue
        if col in FLOAT_LISTS:
            assert got[col] == pytest.approx(value, abs=1e-4), col
        elif col == "steps":
            for a, b in zip(got[col], value, strict=True):
                assert a["entropy_sum"] == pytest.approx(b["entropy_sum"], abs=1e-3)
                assert {**a, "entropy_sum": 0, "entropy_mean": 0} == {
                    **b,
                    "entropy_sum": 0,
                    "entropy_mean": 0,
                }
        else:
            assert got[col] == value, col


def test_two_actors_write_the_rows_of_a_single_process(
    local_ray, problems, tiny_model_dir, tmp_path
):
    from stepprune.scaleout.workers import generate_on_ray
    from stepprune.stages.generate import run

    # Batches of 4 over 6 problems: units of 4 and 2, each seeded and padded as locally. Each
    # actor waits for the other before its unit, so both take one.
    run(_cfg(problems, tiny_model_dir, tmp_path / "local", batch_size=4))
    cfg = _cfg(problems, tiny_model_dir, tmp_path / "ray", batch_size=4, executor="ray", actors=2)
    items, worker = _worker(cfg, WaitForActors, tmp_path / "ready", 2)
    generate_on_ray(cfg, items, worker=worker)
    local, ray_rows = _rows(tmp_path / "local"), _rows(tmp_path / "ray")
    assert len(local) == N and set(ray_rows) == set(local)
    assert len({r["seed"] for r in local.values()}) == 2  # two batches, two batch seeds
    for key, row in local.items():
        _assert_same_row(ray_rows[key], row)
    names = [p.name for p in shard_files(tmp_path / "ray")]
    assert all(n.startswith("part-ray-") for n in names), names
    assert len({n.split("-")[2] for n in names}) == 2, names  # both actors wrote


class LoseActorOnce:
    """Wraps a worker: the first actor to write a row anywhere dies right after that row was
    flushed, in the middle of its unit (once per marker file, created atomically)."""

    def __init__(self, inner, marker: Path):
        self.inner, self.marker = inner, marker
        for name in ("dataset", "setup", "items", "key", "gpus_per_engine"):
            setattr(self, name, getattr(inner, name))

    def __call__(self, items):
        for rows in self.inner(items):
            for row in rows:
                yield [row]  # the actor writes and flushes it before asking for more
                try:
                    fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    continue
                unit = [list(self.key(i)) for i in items]
                os.write(fd, json.dumps({"unit": unit, "flushed": [row["problem_id"], 0]}).encode())
                os.close(fd)
                os._exit(1)


class WaitForActors:
    """Wraps a worker: every actor announces itself and waits for ``n`` actors before its unit."""

    def __init__(self, inner, folder: Path, n: int):
        self.inner, self.folder, self.n = inner, folder, n
        for name in ("dataset", "items", "key", "gpus_per_engine"):
            setattr(self, name, getattr(inner, name))

    def setup(self):
        self.inner.setup()
        self.folder.mkdir(exist_ok=True)
        (self.folder / str(os.getpid())).touch()

    def __call__(self, items):
        import time

        deadline = time.monotonic() + 120
        while len(list(self.folder.iterdir())) < self.n and time.monotonic() < deadline:
            time.sleep(0.2)
        yield from self.inner(items)


def _worker(cfg, wrapper, *args):
    from stepprune.data.load import load_problems
    from stepprune.scaleout.workers import GenerateWorker
    from stepprune.stages.generate import pending_items

    items = pending_items(cfg, load_problems(cfg.problems), set())
    return items, wrapper(GenerateWorker(cfg, items, cfg.model), *args)


def test_a_lost_actor_keeps_its_flushed_rows_and_its_batch_is_redone_once(
    local_ray, problems, tiny_model_dir, tmp_path
):
    from stepprune.scaleout.workers import generate_on_ray
    from stepprune.stages.generate import run

    out, marker = tmp_path / "ray", tmp_path / "lost.json"
    kw = dict(batch_size=3, flush_seconds=0.0, executor="ray", actors=2)
    cfg = _cfg(problems, tiny_model_dir, out, **kw)
    items, worker = _worker(cfg, LoseActorOnce, marker)
    generate_on_ray(cfg, items, worker=worker)
    lost = json.loads(marker.read_text())  # an actor died after flushing one row of its unit
    rows = _rows(out)  # no key twice: the resent unit skipped the flushed row
    assert set(rows) == {(p.id, s) for p, s in items}
    assert tuple(lost["flushed"]) in rows and len(lost["unit"]) == 3
    run(_cfg(problems, tiny_model_dir, tmp_path / "local", batch_size=3))
    local = _rows(tmp_path / "local")
    assert {k: r["token_ids"] for k, r in rows.items()} == {
        k: r["token_ids"] for k, r in local.items()
    }


def test_a_rerun_after_a_failed_run_adds_only_the_missing_rows(
    local_ray, problems, tiny_model_dir, tmp_path
):
    from stepprune.scaleout.workers import generate_on_ray
    from stepprune.stages.generate import run

    out, marker = tmp_path / "ray", tmp_path / "lost.json"
    no_retry = {"max_restarts": 0, "max_task_retries": 0}
    kw = dict(batch_size=3, flush_seconds=0.0, executor="ray", actors=1, ray_remote_args=no_retry)
    cfg = _cfg(problems, tiny_model_dir, out, **kw)
    items, worker = _worker(cfg, LoseActorOnce, marker)
    from ray.exceptions import RayActorError

    with pytest.raises(RayActorError):  # the only actor died and may not restart
        generate_on_ray(cfg, items, worker=worker)
    kept = _rows(out)
    assert len(kept) == 1  # the row flushed before the actor died
    shards_before = {p.name: pq.read_metadata(p).num_rows for p in shard_files(out)}
    summary = run(_cfg(problems, tiny_model_dir, out, batch_size=3, executor="ray", actors=2))
    rows = _rows(out)
    assert len(rows) == N and set(kept) <= set(rows)
    assert all(rows[k] == kept[k] for k in kept)
    for name, n in shards_before.items():  # the first run's shards are untouched
        assert pq.read_metadata(out / name).num_rows == n
    assert summary["rows"] == N


def test_score_on_two_actors_equals_scoring_in_one_process(local_ray, tiny_model_dir, tmp_path):
    from conftest import tiny_generate

    from stepprune.stages.score import ScoreConfig, run

    gen = tiny_generate(tiny_model_dir, tmp_path, 5, rows_per_shard=2)  # 3 shards, 2 actors
    common = dict(input=str(gen), model=str(tiny_model_dir), dtype="float32")
    run(ScoreConfig(out=str(tmp_path / "local"), **common))
    run(ScoreConfig(out=str(tmp_path / "ray"), executor="ray", actors=2, group_rows=2, **common))
    local, ray_rows = _rows(tmp_path / "local"), _rows(tmp_path / "ray")
    assert set(local) == set(ray_rows) and len(local) == 5
    for key, row in local.items():
        assert row["entropy_source"] == "rescored"
        _assert_same_row(ray_rows[key], row)


def test_an_unreachable_ray_address_is_a_one_line_error(problems, tiny_model_dir, tmp_path):
    cmd = [sys.executable, "-m", "stepprune.cli", "generate", "--problems", str(problems)]
    cmd += ["--model", str(tiny_model_dir), "--out", str(tmp_path / "g"), "--executor", "ray"]
    cmd += ["--ray-address", "127.0.0.1:1"]
    env = {**os.environ, "RAY_ADDRESS": ""}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "cannot reach a Ray cluster at 127.0.0.1:1" in last, proc.stderr
    assert "Traceback" not in proc.stderr and "to generate" not in proc.stderr  # before any work
    assert not (tmp_path / "g").exists()


def test_executor_options_are_checked_before_any_work(problems, tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="executor 'slurm'"):
        _cfg(problems, tiny_model_dir, tmp_path, executor="slurm")
    with pytest.raises(ValueError, match="actors must be >= 1"):
        _cfg(problems, tiny_model_dir, tmp_path, executor="ray", actors=0)
    with pytest.raises(ValueError, match="--executor ray balances the problems itself: drop"):
        _cfg(problems, tiny_model_dir, tmp_path, executor="ray", num_shards=2)
    with pytest.raises(ValueError, match="--executor ray does not rescore: drop --rescore"):
        _cfg(problems, tiny_model_dir, tmp_path, executor="ray", rescore=True)


def test_bench_hands_its_executor_to_every_generate_call(tmp_path):
    from stepprune.stages.bench import BenchConfig, generate_config

    cfg = BenchConfig(
        models=["base=m"],
        executor="ray",
        ray_address="10.0.0.1:6379",
        actors=3,
        ray_remote_args={"num_gpus": 1},
    )
    gen = generate_config(cfg, "m", "gsm8k", tmp_path)
    got = (gen.executor, gen.ray_address, gen.actors, gen.ray_remote_args)
    assert got == ("ray", "10.0.0.1:6379", 3, {"num_gpus": 1})


class _FakeRay:
    def __init__(self, gpus):
        self.gpus = gpus

    def cluster_resources(self):
        return {"CPU": 16, "GPU": self.gpus}


class _Worker:
    def __init__(self, gpus_per_engine):
        self.gpus_per_engine = gpus_per_engine


def test_actor_resources_one_gpu_each_or_a_placement_group_for_tensor_parallel():
    from stepprune.scaleout.options import ExecutorOptions
    from stepprune.scaleout.pool import remote_args

    def args(gpus, per_engine, **remote):
        opts = ExecutorOptions(executor="ray", ray_remote_args=remote)
        return remote_args(_Worker(per_engine), opts, _FakeRay(gpus))

    assert args(8, 1) == {"num_gpus": 1}  # else every actor would see every GPU
    assert args(0, 1) == {}
    assert args(8, 1, num_gpus=2, memory=10) == {"num_gpus": 2, "memory": 10}
    assert args(8, 2) == {"num_gpus": 0}  # the engine's workers take the group's GPUs
    with pytest.raises(ValueError, match="leave num_gpus out"):
        args(8, 2, num_gpus=2)
    with pytest.raises(ValueError, match=r"\['batch_size'\] are set by stepprune"):
        args(8, 1, batch_size=4)


def test_vllm_engine_size_counts_tensor_and_pipeline_parallel(tmp_path):
    from stepprune.scaleout.workers import GenerateWorker
    from stepprune.stages.generate import GenerateConfig

    kw = {"tensor_parallel_size": 2, "pipeline_parallel_size": 2}
    assert (
        GenerateWorker(GenerateConfig(backend="vllm", engine_kwargs=kw), [], "m").gpus_per_engine
        == 4
    )
    assert (
        GenerateWorker(GenerateConfig(backend="hf", engine_kwargs={}), [], "m").gpus_per_engine == 1
    )


def test_eval_on_two_actors_equals_eval_in_one_process_and_resumes(
    local_ray, tiny_model_dir, eval_cots, tmp_path
):
    from stepprune.schema import EVAL_RESULTS
    from stepprune.stages.eval import EvalConfig, run

    common = dict(
        input=str(eval_cots),
        model=str(tiny_model_dir),
        kappas=[0.0, 0.5, 1.0],
        strategies=["low", "random"],
        random_seeds=2,
        answer_tokens=4,
        dtype="float32",
        bootstrap=50,
        batch_size=3,  # several units, so both actors answer
    )
    local = run(EvalConfig(out=str(tmp_path / "local"), **common))
    ray_cfg = dict(out=str(tmp_path / "ray"), executor="ray", actors=2, **common)
    first = run(EvalConfig(**{**ray_cfg, "limit": 2}))  # a partial run, then the rest
    assert 0 < first["results"] < local["results"]
    summary = run(EvalConfig(**ray_cfg))
    key = list(EVAL_RESULTS.key)

    def rows(out):
        got = read_table(Path(out) / "results", EVAL_RESULTS).to_pylist()
        keyed = Counter(tuple(r[k] for k in key) for r in got)
        assert max(keyed.values()) == 1  # nothing answered twice
        return {tuple(r[k] for k in key): r for r in got}

    want, got = rows(tmp_path / "local"), rows(tmp_path / "ray")
    assert set(got) == set(want) and summary["results"] == local["results"] == len(want)
    for k, row in want.items():
        assert {**got[k], "created_at": ""} == {**row, "created_at": ""}, k
    names = [p.name for p in shard_files(tmp_path / "ray" / "results")]
    assert all(n.startswith("part-ray-") for n in names), names
    assert len({n.split("-")[2] for n in names}) >= 2, names  # actors of both runs wrote


def _toy_schema():
    import pyarrow as pa

    from stepprune.schema import Schema

    fields = [pa.field("id", pa.string(), nullable=False), pa.field("x", pa.list_(pa.float32()))]
    return Schema(name="toy", version=1, key=("id",), arrow=pa.schema(fields))


TOY = _toy_schema()


def test_the_driver_refuses_an_output_whose_rows_outnumber_its_keys(tmp_path):
    """After a Ray run the driver counts rows against keys: a shard an actor could not see
    (a shared filesystem that hid it) would have been written twice, and this catches it."""
    from stepprune.scaleout.pool import _check_unique
    from stepprune.shards import ShardWriter

    def shard(tag: str, n: int) -> None:
        rows = [{"id": f"r{i}", "x": [0.5]} for i in range(n)]  # both "actors" write r0..
        with ShardWriter(tmp_path, TOY, rows_per_shard=100, tag=tag) as w:
            w.write(rows)

    shard("ray-aaaaaaaaaaaa", 3)
    _check_unique(str(tmp_path), TOY)  # 3 rows, 3 keys: fine
    shard("ray-bbbbbbbbbbbb", 2)
    with pytest.raises(RuntimeError, match=r"5 rows for 3 keys after the Ray run"):
        _check_unique(str(tmp_path), TOY)
