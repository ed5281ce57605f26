"""The render job behind `make render`: source -> Ray actors -> staged objects -> shards.

    python -m data_pipeline.job source=local source.root=DIR output_dir=OUT [render=demo] ...

Reads top to bottom in `run_job`: take OUT's lease (contract.lease: one job per OUT), list the
source, stop there when OUT is already complete (nothing pending, the shards what this run would
write: a finished job run again changes nothing), skip what a previous run finished, fan the
rest out to Ray actors (each owns a killable render process, see data_pipeline.job.worker), stage
every rendered object and quarantine every refused one as results arrive (a JobState holds what
the run planned and recorded, see data_pipeline.job.state), then (re)write the shards from the
staged objects, index them (OUT/shards/index.json, removed before the first shard changes and
written after the last, see contract.dataset_index) and write OUT/summary.json and
OUT/quality.html (data_pipeline.job.quality).
This is the only module that imports `ray`. Layout of OUT: see docs/RENDERING.md.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from contract import storage
from contract.dataset_index import finished_shards, remove_index, write_index
from contract.hydra_compose import CONF_DIR, VERSION_BASE
from contract.lease import FolderBusy, acquire
from contract.schema import ShardManifest
from contract.shard_writer import build_shard, plan_shards, shard_name, write_shards_from_staging
from data_pipeline.job.config import RenderJobConfig, register_configs, to_job_config
from data_pipeline.job.ledger import (
    RENDERED_FILE,
    Location,
    compact_records,
    json_bytes,
    rewrite_ledger,
    staged_objects,
    write_if_changed,
    write_json,
)
from data_pipeline.job.locks import node_scratch, remove_stale_work_dirs
from data_pipeline.job.quality import report_after_job
from data_pipeline.job.state import JobState, plan_job, record
from data_pipeline.job.summary import (
    SUMMARY_FILE,
    log_wandb,
    make_summary,
    plain_config,
    print_summary,
)
from data_pipeline.job.worker import ObjectResult, RenderWorker
from data_pipeline.refusals import TRANSIENT, Reason
from data_pipeline.render.process import DEFAULT_RENDERER
from data_pipeline.render.settings import UNRECORDED_CYCLES, RenderSettings
from data_pipeline.sources import ObjectSpec, Source, SourceError, build_source

JOB_FILE = "job.json"
# This many objects in a row failing with errors that are not refusals (no success between) means
# the environment or the config is broken, not the assets: the job stops instead of failing all.
MAX_CONSECUTIVE_UNEXPECTED = 5


class JobError(RuntimeError):
    """The job cannot start (e.g. OUT holds renders made with other settings)."""


# -- preparation (no Ray) -----------------------------------------------------------------------


def check_settings(out: Location, cfg: RenderJobConfig) -> None:
    """Refuse to mix renders made with different settings in one output folder; record them."""
    # Threads change how fast, not what, Blender renders: a job may resume with other ones.
    settings = {k: v for k, v in plain_config(cfg.render).items() if k != "threads"}
    path = storage.join(out, JOB_FILE)
    if storage.exists(path) and staged_objects(out):
        previous = json.loads(storage.read_bytes(path))["render"]
        previous.setdefault("cycles", dataclasses.asdict(UNRECORDED_CYCLES))  # older job.json
        if previous != settings:
            keys = sorted(k for k in settings | previous if previous.get(k) != settings.get(k))
            raise JobError(
                f"{out} already holds objects rendered with other render settings ({keys} "
                "differ); use another output_dir, or the same settings to resume"
            )
    write_if_changed(path, json_bytes({"render": settings}))


# -- Ray ----------------------------------------------------------------------------------------


def start_ray(cfg: RenderJobConfig) -> bool:
    """Connect to (address=auto/host:port) or start (address=null) a cluster; True if we own it."""
    import ray

    if ray.is_initialized():
        return False
    if cfg.ray.address is None:
        ray.init(num_cpus=cfg.ray.num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    else:
        ray.init(address=cfg.ray.address, logging_level=logging.WARNING)
    return True


def stop_ray() -> None:
    """End the Ray session this job started (start_ray returned True)."""
    import ray

    ray.shutdown()


def gpus_per_worker(cfg: RenderJobConfig) -> float:
    """GPUs each actor asks Ray for: the configured value, else 1 when the cluster has GPUs."""
    import ray

    if cfg.ray.gpus_per_worker is not None:
        return cfg.ray.gpus_per_worker
    has_gpu = ray.cluster_resources().get("GPU", 0) >= 1
    return 1.0 if has_gpu and cfg.render.device != "cpu" else 0.0  # SPEC 3: Cycles on GPU


def worker_count(cfg: RenderJobConfig, pending: int, gpus: float) -> int:
    """Actors to start: as configured, or as many as the cluster's CPUs (and GPUs) fit.

    Never more than the cluster can place now, else the surplus actors would wait forever.
    """
    import ray

    resources = ray.cluster_resources()
    fit = int(resources.get("CPU", 1) // cfg.ray.cpus_per_worker)
    if gpus > 0:
        fit = min(fit, int(resources.get("GPU", 0) // gpus))
    if fit < 1:
        raise JobError(
            f"the Ray cluster ({resources.get('CPU', 0)} CPUs, {resources.get('GPU', 0)} GPUs) "
            f"cannot place one render actor ({cfg.ray.cpus_per_worker} CPUs, {gpus} GPUs)"
        )
    wanted = cfg.ray.workers if cfg.ray.workers is not None else fit
    if wanted > fit:
        print(
            f"warning: ray.workers={wanted} but the cluster fits {fit} render actors; using {fit}"
        )
    return max(1, min(wanted, fit, pending))


def work_dir(cfg: RenderJobConfig, out: Location) -> Path | None:
    """The render processes' local scratch: work_dir, else OUT/work for a local OUT; None (each
    node's own, data_pipeline.job.locks.node_scratch) when OUT is in object storage."""
    if cfg.work_dir is not None:
        return Path(cfg.work_dir).expanduser().resolve()
    return None if storage.is_url(out) else Path(out) / "work"


def worker_settings(cfg: RenderJobConfig, workers: int) -> RenderSettings:
    """The render settings each of `workers` workers gets. `threads: 0` becomes, on a local
    cluster, this machine's cores shared among the workers (at least one thread each), and on a
    cluster the job joined, `ray.cpus_per_worker` (what Ray reserves for a worker, rounded
    down, at least one): workers x threads fit the cores either way."""
    if cfg.render.threads:
        return cfg.render
    if cfg.ray.address is None:
        threads = (cfg.ray.num_cpus or os.cpu_count() or 1) // max(workers, 1)
    else:
        threads = int(cfg.ray.cpus_per_worker)
    return dataclasses.replace(cfg.render, threads=max(1, threads))


def actor_factory(
    cfg: RenderJobConfig, source: Any, out: Location, renderer: str, gpus: float, workers: int
) -> Callable[[], Any]:
    """A function that starts one render actor."""
    import ray

    actor_cls = ray.remote(RenderWorker).options(
        num_cpus=cfg.ray.cpus_per_worker, num_gpus=gpus, max_restarts=0
    )

    scratch = work_dir(cfg, out)
    render_settings = worker_settings(cfg, workers)

    def new_actor() -> Any:
        return actor_cls.remote(
            source,
            render_settings,
            time_limit_s=cfg.time_limit_s,
            max_attempts=cfg.max_attempts,
            work_dir=None if scratch is None else str(scratch),
            renderer=renderer,
            recycle_after=cfg.recycle_after,
        )

    return new_actor


def start_actors(new_actor: Callable[[], Any], workers: int) -> list:
    """Start the actors and their render processes (Blender's import is no object's time)."""
    import ray

    actors = [new_actor() for _ in range(workers)]
    try:
        ray.get([a.warm_up.remote() for a in actors])
    except ray.exceptions.RayTaskError as exc:  # e.g. Blender cannot start here
        stop_actors(actors)
        raise JobError(f"render processes cannot start: {exc.cause}") from exc
    except BaseException:
        stop_actors(actors)
        raise
    return actors


def render_all(
    actors: list, new_actor: Callable[[], Any], specs: list[ObjectSpec], max_attempts: int
) -> Iterator[ObjectResult]:
    """Keep every actor busy with one object; yield results as they finish (any order).

    Each actor retries transient failures itself; an actor that dies (the Ray worker, not its
    render process) costs its object one attempt (WORKER_CRASHED) and is replaced in `actors`.
    """
    import ray
    from ray.exceptions import RayActorError

    queue = [(spec, 0) for spec in reversed(specs)]
    in_flight: dict[Any, tuple[Any, ObjectSpec, int]] = {}
    idle = list(actors)
    while queue or in_flight:
        while queue and idle:
            actor = idle.pop()
            spec, earlier = queue.pop()
            in_flight[actor.process_object.remote(spec)] = (actor, spec, earlier)
        (ref,), _ = ray.wait(list(in_flight), num_returns=1)
        actor, spec, earlier = in_flight.pop(ref)
        try:
            result: ObjectResult = ray.get(ref)
        except RayActorError as exc:
            result = ObjectResult(
                uid=spec.uid,
                path=spec.path,
                attempts=1,
                reason=Reason.WORKER_CRASHED.value,
                detail=f"render actor died: {exc}",
            )
            ray.kill(actor, no_restart=True)
            actors.remove(actor)
            actor = new_actor()
            actors.append(actor)
        result.attempts += earlier
        retry = not result.ok and Reason(str(result.reason)) in TRANSIENT
        if retry and result.attempts < max_attempts:
            queue.append((spec, result.attempts))
        else:
            yield result
        idle.append(actor)


def stop_actors(actors: list) -> None:
    import ray

    try:
        ray.get([a.close.remote() for a in actors], timeout=30)
    except Exception as exc:  # an actor already gone: nothing left to close
        print(f"warning: closing render actors: {exc}", file=sys.stderr)
    for actor in actors:
        ray.kill(actor, no_restart=True)


# -- the job ------------------------------------------------------------------------------------


def run_job(cfg: RenderJobConfig, renderer: str = DEFAULT_RENDERER) -> dict[str, Any]:
    """Render every object of the source that is not done yet; returns the summary. The job
    holds OUT's lease throughout (contract.lease): a second job on OUT stops at once."""
    out = storage.resolve(cfg.output_dir)
    storage.makedirs(out)
    try:
        lease = acquire(out, "render job", cfg.lease_ttl_s)
    except FolderBusy as exc:
        raise JobError(str(exc)) from exc
    try:
        return _run_job(cfg, out, renderer)
    finally:
        lease.release()


def _run_job(cfg: RenderJobConfig, out: Location, renderer: str) -> dict[str, Any]:
    job_start = time.monotonic()
    retries_before = storage.store_retries()  # this process's; workers and tasks count theirs
    check_settings(out, cfg)
    clean_work_dirs(work_dir(cfg, out) or node_scratch())
    source = build_source(cfg.source, out)
    job = plan_job(out, source, cfg.retry_quarantined)
    shards_dir = storage.join(out, "shards")
    if not job.pending and (done := finished_shards(job.staged, shards_dir, cfg.num_shards)):
        return report_finished(cfg, job, done, job_start)
    if job.pending:
        source.prefetch(job.pending)
    job.phases["prepare"] = time.monotonic() - job_start
    owns_ray = False
    try:
        if job.pending:
            start = time.monotonic()
            owns_ray = start_ray(cfg)
            job.phases["ray_start"] = time.monotonic() - start
            render_pending(cfg, job, source, renderer)
        start = time.monotonic()
        remove_index(shards_dir)  # from here until write_index the folder is visibly incomplete
        written = write_shards(cfg, job.staged, shards_dir)  # in the same Ray session
        job.manifests = written.manifests
        job.store_retries["shard_tasks"] = written.store_retries
        write_index(shards_dir, job.manifests)  # last: the folder is complete
    finally:
        if owns_ray:
            stop_ray()
    rewrite_ledger(out, job.quarantined.values())
    compact_records(out, RENDERED_FILE)  # (object storage) the timing parts into one file
    job.store_retries["driver"] = storage.store_retries() - retries_before
    job.store_retries["render_workers"] = sum(r.store_retries for r in job.results)
    job.phases["shards"] = time.monotonic() - start
    job.phases["total"] = time.monotonic() - job_start
    summary = make_summary(cfg, job)
    write_json(storage.join(out, SUMMARY_FILE), summary)
    print_summary(summary)
    quality = report_after_job(out, cfg.quality)  # OUT/quality.html, from the files just written
    log_wandb(cfg, summary, quality)
    return summary


def report_finished(
    cfg: RenderJobConfig, job: JobState, manifests: list[ShardManifest], job_start: float
) -> dict[str, Any]:
    """A finished job run again: nothing pending and the shards already what this run would
    write. Says so and returns this run's summary (nothing rendered), changing no file (the
    summary on record stays that of the run that did the work) and starting no Ray."""
    job.manifests = manifests
    job.phases["total"] = time.monotonic() - job_start
    rings = sum(len(m.entries) for m in manifests)
    print(
        f"{job.out} is complete: {len(job.staged)} objects staged, {len(job.quarantined)} "
        f"quarantined, {len(manifests)} shards ({rings} rings) as indexed; nothing to do"
    )
    return make_summary(cfg, job)


def render_pending(cfg: RenderJobConfig, job: JobState, source: Source, renderer: str) -> None:
    """Render `job.pending` on Ray actors, recording each result as it arrives (staged or
    quarantined); stops the job after MAX_CONSECUTIVE_UNEXPECTED unexpected failures in a row."""
    actors: list = []
    try:
        start = time.monotonic()
        gpus = gpus_per_worker(cfg)
        job.workers = worker_count(cfg, len(job.pending), gpus)
        new_actor = actor_factory(cfg, source, job.out, renderer, gpus, job.workers)
        actors = start_actors(new_actor, job.workers)
        job.phases["actor_start"] = time.monotonic() - start
        start = time.monotonic()
        stream = render_all(actors, new_actor, job.pending, cfg.max_attempts)
        in_a_row = 0
        for result in _progress(stream, len(job.pending), cfg.progress):
            record(job, result)
            in_a_row = in_a_row + 1 if result.unexpected else 0
            if in_a_row >= MAX_CONSECUTIVE_UNEXPECTED:
                logs = work_dir(cfg, job.out) or "<TMPDIR>/imagedream-render on each node"
                raise JobError(
                    f"{in_a_row} objects in a row failed with errors that are not asset "
                    f"refusals (last: {result.detail}); see the logs in {logs}/logs. Fix the "
                    "environment or config and run again: they were not quarantined."
                )
        job.phases["render"] = time.monotonic() - start
    finally:
        stop_actors(actors)  # kills the render processes too
        clean_work_dirs(work_dir(cfg, job.out) or node_scratch())  # what dead actors left here


@dataclass
class ShardsWritten:
    manifests: list[ShardManifest]  # by shard id
    store_retries: int = 0  # object-store requests the sharding tasks retried


def counted_build_shard(path: str, staged_paths: Mapping[str, str]) -> tuple[ShardManifest, int]:
    """build_shard, and the store requests it retried (what a sharding task runs)."""
    before = storage.store_retries()
    manifest = build_shard(path, staged_paths)
    return manifest, storage.store_retries() - before


def write_shards(
    cfg: RenderJobConfig, staged: Mapping[str, Location], shards_dir: Location
) -> ShardsWritten:
    """(Re)write the shards from the staged objects: one Ray task per shard (at most
    `cfg.shard_workers` at once, default the CPUs of the nodes that see OUT), each reading only
    its own objects, so no process reads them all and the driver holds only the manifests. A
    local OUT is seen by the driver's node, where the tasks then run; OUT in object storage by
    every node. shard_workers=0 builds them in the driver."""
    if cfg.shard_workers == 0:  # the driver's retries: counted as the driver's
        return ShardsWritten(write_shards_from_staging(staged, shards_dir, cfg.num_shards))
    import ray

    assignment = plan_shards(staged, shards_dir, cfg.num_shards)
    if not assignment:
        return ShardsWritten([])
    owns_ray = start_ray(cfg)
    try:
        task = ray.remote(num_cpus=1, max_retries=2)(counted_build_shard)
        if storage.is_url(shards_dir):  # every node sees it
            cpus = ray.cluster_resources().get("CPU", 1)
        else:  # on the driver's node: the one that sees a local OUT
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            node = ray.get_runtime_context().get_node_id()
            here: dict[str, Any] = next((n for n in ray.nodes() if n["NodeID"] == node), {})
            cpus = here.get("Resources", {}).get("CPU", 1)
            task = task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, False))
        limit = cfg.shard_workers or max(1, int(cpus))
        pending: list[Any] = []
        results: list[tuple[ShardManifest, int]] = []
        for sid, uids in assignment.items():
            if len(pending) >= limit:
                done, pending = ray.wait(pending, num_returns=1)
                results += ray.get(done)
            paths = {u: str(staged[u]) for u in uids}
            pending.append(task.remote(storage.join(shards_dir, shard_name(sid)), paths))
        results += ray.get(pending)
    finally:
        if owns_ray:
            stop_ray()
    manifests = sorted((m for m, _ in results), key=lambda m: m.shard)
    return ShardsWritten(manifests, sum(n for _, n in results))


def clean_work_dirs(folder: Path) -> None:
    """Remove the render-* work folders that earlier (killed) runs or dead actors left behind in
    this node's scratch; those of live render actors are locked and kept (data_pipeline.job.locks).
    Render actors do the same on their own nodes when they start."""
    removed = remove_stale_work_dirs(folder)
    if removed:
        print(f"removed {len(removed)} work folders left by killed render runs in {folder}")


def _progress(results: Iterator[ObjectResult], total: int, enabled: bool) -> Iterator[ObjectResult]:
    from tqdm import tqdm

    counts: Counter[str] = Counter()
    with tqdm(total=total, desc="render", unit="obj", disable=not enabled, file=sys.stdout) as bar:
        for result in results:
            counts["ok" if result.ok else str(result.reason)] += 1
            bar.set_postfix(dict(counts), refresh=False)
            bar.update(1)
            yield result


# -- entry point --------------------------------------------------------------------------------


@hydra.main(config_path=str(CONF_DIR), config_name="render", version_base=VERSION_BASE)
def main(cfg: DictConfig) -> None:
    try:
        run_job(to_job_config(cfg))
    except (SourceError, JobError, ValueError) as exc:  # ValueError: a config check failed
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    register_configs()
    main()
