"""The render job's summary: what was rendered, refused and how long Blender took, as
OUT/summary.json, a few console lines and (optionally) a W&B run."""

from __future__ import annotations

import os
import statistics
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from contract import storage
from data_pipeline.job.config import RenderJobConfig
from data_pipeline.job.ledger import read_rendered
from data_pipeline.job.quality_html import wandb_media
from data_pipeline.job.quality_report import QualityReport
from data_pipeline.job.state import JobState
from data_pipeline.refusals import Reason

SUMMARY_FILE = "summary.json"


def make_summary(cfg: RenderJobConfig, job: JobState) -> dict[str, Any]:
    """summary.json of a finished run (job.phases complete)."""
    rendered = [r for r in job.results if r.ok]
    refused = [r for r in job.results if not r.ok and not r.unexpected]
    errors = [r for r in job.results if r.unexpected]
    blender = sum(r.blender_seconds for r in rendered)
    per_object = [r.wall_seconds for r in rendered]
    views = sum(r.rings for r in rendered) * cfg.render.num_views
    quarantined = job.quarantined
    noted = [r for r in rendered if r.notes]
    # every staged object's latest timing line (earlier runs too) says whether it had notes
    latest = {rec.get("uid"): rec for rec in read_rendered(job.out) if isinstance(rec, dict)}
    noted_total = [latest[u] for u in job.staged if latest.get(u, {}).get("notes")]
    job_seconds = job.phases["total"]
    return {
        "output_dir": str(job.out),
        "source": getattr(cfg.source, "kind", "?"),
        "objects_in_source": len(job.specs),
        "duplicates": job.duplicates,
        "resumed": job.resumed,
        "this_run": {
            "rendered": len(rendered),
            "quarantined": len(refused),
            "quarantined_by_reason": dict(Counter(str(r.reason) for r in refused)),
            "retried": sum(r.attempts > 1 for r in job.results),
            "errors": len(errors),  # not refusals, not quarantined: retried by the next run
            # rendered, but the asset had a defect recorded in RingMeta.notes (missing texture...)
            "with_notes": {
                "objects": len(noted),
                "rings": sum(r.rings_with_notes for r in noted),
            },
        },
        "errors": [{"uid": r.uid, "path": r.path, "detail": r.detail} for r in errors],
        # files of formats the pipeline does not render (data_pipeline.formats), this run
        "unsupported": [
            {"uid": r.uid, "path": r.path, "detail": r.detail}
            for r in refused
            if r.reason == Reason.UNSUPPORTED_FORMAT.value
        ],
        "notes": [{"uid": r.uid, "path": r.path, "notes": r.notes} for r in noted],
        "total": {
            "staged": len(job.staged),
            "quarantined": len(quarantined),
            "quarantined_by_reason": dict(Counter(e.reason for e in quarantined.values())),
            "shards": len(job.manifests),
            "rings": sum(len(m.entries) for m in job.manifests),
            "with_notes": {
                "objects": len(noted_total),
                "rings": sum(int(rec.get("rings_with_notes", 0)) for rec in noted_total),
            },
        },
        # object-store requests retried (transient errors: 5xx, SlowDown, timeouts) and then
        # answered; only errors that outlast the retries fail an object
        "store_retries": {**job.store_retries, "total": sum(job.store_retries.values())},
        "timing": {
            "job_seconds": job_seconds,
            "phases_seconds": job.phases,  # state.PHASES
            "workers": job.workers,
            "blender_seconds": blender,
            "worker_seconds_rendered": sum(per_object),  # fetch + render + stage, in the workers
            "worker_seconds_refused": sum(r.wall_seconds for r in refused),
            "seconds_per_object": statistics.fmean(per_object) if per_object else None,
            "seconds_per_view": (blender / views) if views else None,
            # worker-seconds the job spent per second Blender spent rendering (1.0 = no overhead)
            "overhead_ratio": (job_seconds * max(job.workers, 1) / blender) if blender else None,
            # the same without the job's fixed costs (start-up, shards): what a long job tends to
            "per_object_overhead_ratio": (sum(per_object) / blender) if blender else None,
            "objects_per_hour": objects_per_hour(
                len(rendered), job_seconds, per_object, cfg.ray.cpus_per_worker
            ),
        },
        "render_settings": plain_config(cfg.render),
        "num_shards": cfg.num_shards,
        "shards": [m.shard for m in job.manifests],
    }


def objects_per_hour(
    rendered: int, job_seconds: float, per_object: list[float], cpus_per_worker: float
) -> dict[str, float | None]:
    """Throughput for planning a cluster: the job's (start-up and shards included, so a small
    job understates it), one worker's sustained rate (3600 / its mean seconds per object) and
    that rate per CPU the worker holds (`ray.cpus_per_worker`). RENDERING.md: "Planning"."""
    per_worker = 3600.0 / statistics.fmean(per_object) if per_object else None
    return {
        "job": 3600.0 * rendered / job_seconds if rendered and job_seconds > 0 else None,
        "per_worker": per_worker,
        "per_cpu": per_worker / cpus_per_worker if per_worker else None,
        "cpus_per_worker": cpus_per_worker,
    }


def print_summary(summary: dict[str, Any]) -> None:
    run, total, timing = summary["this_run"], summary["total"], summary["timing"]
    rate = timing["objects_per_hour"]
    lines = [
        f"rendered {run['rendered']}, quarantined {run['quarantined']} "
        f"{run['quarantined_by_reason'] or ''} this run",
        f"total: {total['staged']} objects in {total['shards']} shards ({total['rings']} rings), "
        f"{total['quarantined']} quarantined {total['quarantined_by_reason'] or ''}",
        f"job {timing['job_seconds']:.1f} s, Blender {timing['blender_seconds']:.1f} s, "
        f"workers {timing['workers']}, overhead ratio {_fmt(timing['overhead_ratio'])}, "
        f"{_fmt(timing['seconds_per_object'])} s/object",
        f"objects per hour: {_fmt(rate['job'], '.0f')} this job, "
        f"{_fmt(rate['per_worker'], '.0f')} per worker, {_fmt(rate['per_cpu'], '.0f')} per CPU",
    ]
    if run["with_notes"]["objects"]:
        lines.append(
            f"{run['with_notes']['objects']} objects ({run['with_notes']['rings']} rings) rendered "
            "with notes (e.g. a missing texture): see summary.json 'notes' and RingMeta.notes"
        )
    if summary["unsupported"]:
        shown = ", ".join(u["path"] for u in summary["unsupported"][:3])
        more = len(summary["unsupported"]) - 3
        lines.append(
            f"{len(summary['unsupported'])} files quarantined as unsupported_format ({shown}"
            f"{f' and {more} more' if more > 0 else ''}): see summary.json 'unsupported'"
        )
    if run["errors"]:
        lines.append(
            f"{run['errors']} objects failed with errors that are not refusals (not quarantined, "
            "retried next run): see summary.json 'errors' and OUT/work/logs"
        )
    if summary["duplicates"]:
        lines.append(f"duplicate uids in the source: {[d['uid'] for d in summary['duplicates']]}")
    lines.append(f"summary: {storage.join(summary['output_dir'], SUMMARY_FILE)}")
    print("\n".join(lines))


def plain_config(config: Any) -> dict[str, Any]:
    """A typed config as plain JSON-able containers (tuples become lists, like in JSON)."""
    data = OmegaConf.to_container(OmegaConf.structured(config))
    assert isinstance(data, dict)
    return {str(k): v for k, v in data.items()}


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def log_wandb(
    cfg: RenderJobConfig, summary: dict[str, Any], quality: QualityReport | None = None
) -> None:
    """Optional: the summary (and the quality report's figures) to W&B. Online without a key
    falls back to offline; never fatal."""
    mode = cfg.wandb.mode
    if mode == "disabled":
        return
    if mode == "online" and not _have_wandb_key():
        print("warning: wandb.mode=online but no W&B API key; logging offline instead")
        mode = "offline"
    try:
        import wandb

        run = wandb.init(
            project=cfg.wandb.project,
            entity=cfg.wandb.entity,
            name=cfg.wandb.name,
            mode="online" if mode == "online" else "offline",
            dir=summary["output_dir"],
            config=plain_config(cfg),
            job_type="render",
        )
        flat = {
            "rendered": summary["this_run"]["rendered"],
            "quarantined": summary["this_run"]["quarantined"],
            "staged_total": summary["total"]["staged"],
            **{f"timing/{k}": v for k, v in summary["timing"].items() if v is not None},
            **{f"quarantine/{k}": v for k, v in summary["total"]["quarantined_by_reason"].items()},
        }
        media = wandb_media(quality, wandb) if quality is not None else {}
        run.log({**flat, **media})
        run.summary.update(flat)
        run.finish()
    except Exception as exc:  # logging must never lose a finished render
        print(f"warning: W&B logging failed: {exc}", file=sys.stderr)


def _have_wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path.home() / ".netrc"
    return netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")
