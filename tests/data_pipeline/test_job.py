"""The render job: the Ray job end to end, kill and resume, quarantine of broken assets (the
worker alone, without Ray, is in test_worker.py). `fake_render` (fakes.py) stands in for Blender
where the logic, not the pixels, is under test; the slow tests run the real renderer at tiny
settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from contract.dataset_index import read_index
from contract.shard_reader import read_manifests, read_rings, verify_shard
from data_pipeline.job.config import RayConfig, RenderJobConfig
from data_pipeline.job.ledger import read_ledger, read_rendered
from data_pipeline.job.run import JobError, run_job
from data_pipeline.refusals import Reason
from data_pipeline.render.settings import RenderSettings
from data_pipeline.sources import LocalSource, LocalSourceConfig, ObjaverseSourceConfig
from tests.data_pipeline.assets import make_objaverse_cache
from tests.data_pipeline.fakes import FAKE, job_config, kill_when, make_assets


def shard_keys(out: Path) -> list[str]:
    return [rec.key for rec in read_rings(str(out / "shards"), views=[0])]


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


# -- the Ray job --------------------------------------------------------------------------------


def test_job_removes_work_folders_of_earlier_killed_runs(tmp_path, ray_cluster):
    root = make_assets(tmp_path / "a", {"one": "fine"})
    out = tmp_path / "out"
    leftovers = [out / "work" / "render-killed1", out / "work" / "render-killed2"]
    for folder in leftovers:
        folder.mkdir(parents=True)
    (leftovers[1] / ".one.tar.tmp-123").write_bytes(b"half a tar")
    run_job(job_config(out, root, ray=RayConfig(workers=1)), renderer=FAKE)
    assert not any(f.exists() for f in leftovers)
    assert not list((out / "work").glob("*render-*")), "this run's own folders are gone too"


def test_job_writes_a_dataset_index_the_reader_accepts(tmp_path, ray_cluster):
    root = make_assets(tmp_path / "a", {"one": "fine", "two": "fine", "bad": "refuse"})
    out = tmp_path / "out"
    summary = run_job(job_config(out, root), renderer=FAKE)
    index = read_index(out / "shards")
    assert index.complete and (index.num_objects, index.num_rings) == (2, 4)
    assert [e.name for e in index.shards] == summary["shards"]
    specs = LocalSource(LocalSourceConfig(root=str(root))).list_objects()
    uids = [s.uid for s in specs if not s.path.endswith("bad.glb")]
    assert sorted(shard_keys(out)) == sorted(f"{u}_r{r}" for u in uids for r in (0, 1))


def test_files_of_unsupported_formats_are_quarantined_with_their_path_and_counted(
    tmp_path, ray_cluster, capsys
):
    """On main a .3ds in a folder of meshes vanished from the job's report; now every file that
    is not a companion is rendered or quarantined (unsupported_format, with its path)."""
    root = make_assets(tmp_path / "a", {"one": "fine", "two": "fine"})
    (root / "chair.3ds").write_bytes(b"MM\x00\x00")
    (root / "notes.txt").write_text("not a caption: no object is called notes")
    (root / "one.txt").write_text("a caption of one.glb")  # companions from here on
    (root / "one.mtl").write_text("newmtl x\n")
    (root / "wood.png").write_bytes(b"\x89PNG")
    (root / ".DS_Store").write_bytes(b"\x00")
    out = tmp_path / "out"
    summary = run_job(job_config(out, root), renderer=FAKE)
    printed = capsys.readouterr().out
    unsupported = {str(root.resolve() / n) for n in ("chair.3ds", "notes.txt")}
    ledger = read_ledger(out)
    assert {e.path for e in ledger.values()} == unsupported
    assert {e.reason for e in ledger.values()} == {Reason.UNSUPPORTED_FORMAT.value}
    assert all("is not a 3D format" in e.detail for e in ledger.values())
    assert summary["objects_in_source"] == 4
    assert summary["this_run"]["rendered"] == 2
    assert summary["this_run"]["quarantined_by_reason"] == {"unsupported_format": 2}
    assert summary["total"]["quarantined_by_reason"] == {"unsupported_format": 2}
    assert {u["path"] for u in summary["unsupported"]} == unsupported
    assert json.loads((out / "summary.json").read_text())["unsupported"] == summary["unsupported"]
    assert "2 files quarantined as unsupported_format" in printed and "chair.3ds" in printed
    again = run_job(job_config(out, root), renderer=FAKE)  # resumed: nothing is redone
    assert again["resumed"] == {"already_staged": 2, "already_quarantined": 2}
    assert again["unsupported"] == [] and again["total"]["quarantined"] == 2


def test_rings_of_assets_with_notes_are_counted_in_the_summary(tmp_path, ray_cluster):
    root = make_assets(tmp_path / "a", {"plain": "fine", "untextured": "fine note"})
    out = tmp_path / "out"
    summary = run_job(job_config(out, root), renderer=FAKE)
    assert summary["this_run"]["with_notes"] == {"objects": 1, "rings": 2}
    assert summary["total"]["with_notes"] == {"objects": 1, "rings": 2}
    (noted,) = summary["notes"]
    assert Path(noted["path"]).stem == "untextured" and "wood.png" in noted["notes"][0]
    notes = {Path(r.meta.asset_path).stem: r.meta.notes for r in read_rings(out, views=[0])}
    assert notes["plain"] == [] and "wood.png" in notes["untextured"][0]
    assert {Path(r["path"]).stem: bool(r["notes"]) for r in read_rendered(out)} == {
        "plain": False,
        "untextured": True,
    }
    again = run_job(job_config(out, root), renderer=FAKE)  # nothing rendered, still counted
    assert again["this_run"]["with_notes"] == {"objects": 0, "rings": 0}
    assert again["total"]["with_notes"] == {"objects": 1, "rings": 2}


def test_job_quarantines_hung_crashed_and_refused_objects_and_finishes(tmp_path, ray_cluster):
    kinds = {"a": "fine", "b": "fine", "c": "fine", "hang": "hang", "refuse": "refuse"}
    root = make_assets(tmp_path / "a", {**kinds, "crash": "crash", "boom": "boom"})
    out = tmp_path / "out"
    start = time.monotonic()
    summary = run_job(job_config(out, root, time_limit_s=2.0, max_attempts=1), renderer=FAKE)
    assert time.monotonic() - start < 120  # the hung render does not hold the job
    assert summary["this_run"]["rendered"] == 3
    assert summary["this_run"]["quarantined_by_reason"] == {
        "timeout": 1,
        "no_faces": 1,
        "worker_crashed": 1,
    }
    ledger = read_ledger(out)
    reasons = {e.reason for e in ledger.values()}
    assert {Path(e.path).stem: e.reason for e in ledger.values()} == {
        "hang": "timeout",
        "refuse": "no_faces",
        "crash": "worker_crashed",
    }
    line = json.loads((out / "quarantine.jsonl").read_text().splitlines()[0])
    assert {"uid", "path", "reason", "detail", "attempts"} <= set(line)
    # an error that is not a refusal is reported, never quarantined
    assert summary["this_run"]["errors"] == 1
    assert [Path(e["path"]).stem for e in summary["errors"]] == ["boom"]
    assert "boom" in summary["errors"][0]["detail"]
    keys = shard_keys(out)
    assert len(keys) == 6 and len(set(keys)) == 6  # 3 objects x 2 rings, once each
    for m in read_manifests(out):
        verify_shard(out / "shards" / m.shard)
    assert json.loads((out / "summary.json").read_text())["total"]["staged"] == 3
    quality = json.loads((out / "quality.json").read_text())  # the report beside the summary
    assert quality["quarantined_by_reason"] == {"no_faces": 1, "timeout": 1, "worker_crashed": 1}
    assert quality["rings"] == 6 and all(r in (out / "quality.html").read_text() for r in reasons)

    # a second run renders nothing new: every object is staged or finally quarantined, and
    # only the object that met an unexpected error is tried again
    again = run_job(job_config(out, root, time_limit_s=2.0, max_attempts=1), renderer=FAKE)
    assert again["this_run"] == {
        "rendered": 0,
        "quarantined": 0,
        "quarantined_by_reason": {},
        "retried": 0,
        "errors": 1,
        "with_notes": {"objects": 0, "rings": 0},
    }
    assert again["resumed"] == {"already_staged": 3, "already_quarantined": 3}
    assert sorted(shard_keys(out)) == sorted(keys)


def test_job_stops_when_every_object_fails_for_a_reason_that_is_not_a_refusal(
    tmp_path, ray_cluster
):
    root = make_assets(tmp_path / "a", {f"b{i}": "boom" for i in range(7)})
    cfg = job_config(tmp_path / "out", root, max_attempts=1, ray=RayConfig(workers=1))
    with pytest.raises(JobError, match=r"5 objects in a row .* not asset refusals"):
        run_job(cfg, renderer=FAKE)
    assert read_ledger(tmp_path / "out") == {}  # nothing blamed on the assets


def test_dead_ray_actor_is_replaced_and_its_object_retried(tmp_path, ray_cluster):
    root = make_assets(tmp_path / "a", {"victim": "killactor", "other": "fine"})
    summary = run_job(job_config(tmp_path / "out", root, max_attempts=2), renderer=FAKE)
    assert summary["this_run"]["rendered"] == 2 and summary["this_run"]["retried"] == 1
    listed = LocalSource(LocalSourceConfig(root=str(root))).list_objects()
    uids = [s.uid for s in listed if not s.unsupported]  # not fake_render's victim.glb.tried
    assert sorted(k[:-3] for k in shard_keys(tmp_path / "out")) == sorted(uids * 2)


def test_duplicate_uids_are_reported_and_rendered_once(tmp_path, ray_cluster):
    root = make_assets(tmp_path / "a", {"one": "fine", "two": "fine"})
    manifest = tmp_path / "list.csv"
    manifest.write_text("path,uid\na/one.glb,same\na/two.glb,same\n")
    cfg = job_config(tmp_path / "out", root)
    cfg.source = LocalSourceConfig(manifest=str(manifest))
    summary = run_job(cfg, renderer=FAKE)
    assert summary["duplicates"] == [
        {
            "uid": "same",
            "kept": str((root / "one.glb").resolve()),
            "dropped": [str((root / "two.glb").resolve())],
        }
    ]
    assert shard_keys(tmp_path / "out") == ["same_r0", "same_r1"]


def test_other_render_settings_in_same_output_are_refused(tmp_path, ray_cluster):
    root = make_assets(tmp_path / "a", {"one": "fine"})
    run_job(job_config(tmp_path / "out", root), renderer=FAKE)
    with pytest.raises(JobError, match="num_views"):
        run_job(job_config(tmp_path / "out", root, render={"num_views": 8}), renderer=FAKE)


def test_objaverse_job_from_local_cache_quarantines_failed_download(tmp_path, ray_cluster):
    cache, uids = make_objaverse_cache(tmp_path)
    missing = "f" * 32  # listed in the index, not in the cache; the machine is offline
    cfg = job_config(tmp_path / "out", tmp_path, max_attempts=2)
    cfg.source = ObjaverseSourceConfig(uids=[*uids[:2], missing], cache_dir=str(cache))
    summary = run_job(cfg, renderer=FAKE)
    assert summary["this_run"]["rendered"] == 2
    entry = read_ledger(tmp_path / "out")[missing]
    assert (entry.reason, entry.attempts) == (Reason.FETCH_FAILED.value, 2)
    records = list(read_rings(str(tmp_path / "out" / "shards"), views=[0]))
    assert sorted({r.meta.uid for r in records}) == sorted(uids[:2])
    assert {r.meta.source for r in records} == {"objaverse"}


_KILLABLE_JOB = """
import sys
from data_pipeline.job.config import RayConfig
from tests.data_pipeline.fakes import FAKE, job_config
from data_pipeline.job.run import run_job
from pathlib import Path
run_job(job_config(Path(sys.argv[1]), Path(sys.argv[2]), ray=RayConfig(address=sys.argv[3], workers=1)), renderer=FAKE)
"""


def test_job_killed_midway_resumes_without_loss_or_duplicates(tmp_path, ray_cluster):
    names = [f"obj{i}" for i in range(8)]
    root = make_assets(tmp_path / "a", dict.fromkeys(names, "fine sleep=0.5"))
    out = tmp_path / "out"
    kill_when(
        [sys.executable, "-c", _KILLABLE_JOB, str(out), str(root), ray_cluster],
        {**os.environ, "PYTHONPATH": str(Path.cwd())},
        lambda: len(list((out / "staging").glob("*.tar"))) >= 3,
        timeout=120,
    )
    staged_before = len(list((out / "staging").glob("*.tar")))
    assert 3 <= staged_before < len(names), "the kill came too late to test resumption"
    assert not (out / "summary.json").exists()

    summary = run_job(job_config(out, root), renderer=FAKE)
    assert summary["resumed"]["already_staged"] == staged_before
    assert summary["this_run"]["rendered"] == len(names) - staged_before
    keys = Counter(shard_keys(out))
    assert set(keys.values()) == {1}
    assert sorted(keys) == sorted(f"{u}_r{r}" for u in {k[:-3] for k in keys} for r in range(2))
    assert len(keys) == 2 * len(names)


# -- the real renderer (Blender) ------------------------------------------------------------------

TINY_OVERRIDES = [
    "render.num_views=8",
    "render.rings=1",
    "render.resolution=64",
    "render.samples=4",
    "render.framing=bounding_sphere",
]


def run_cli(overrides: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m data_pipeline.job ...` exactly as `make render` runs it."""
    return subprocess.run(
        [sys.executable, "-m", "data_pipeline.job", *overrides],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(Path.cwd())},
    )


@pytest.mark.slow
def test_cli_renders_builtin_objects_end_to_end(tmp_path, ray_cluster):
    out = tmp_path / "out"
    proc = run_cli(
        ["source=builtin", f"output_dir={out}", f"ray.address={ray_cluster}", *TINY_OVERRIDES]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["this_run"]["rendered"] == 3 and summary["total"]["quarantined"] == 0
    assert summary["timing"]["blender_seconds"] > 0
    records = list(read_rings(str(out / "shards")))
    assert len(records) == 3
    for rec in records:
        assert rec.images.shape == (8, 64, 64, 4)
        assert rec.meta.source == "builtin" and rec.meta.caption
        assert (rec.images[..., 3] > 127).any(axis=(1, 2)).all()  # the object is in every view
    assert {m.shard for m in read_manifests(out)} == set(summary["shards"])


@pytest.mark.slow
@pytest.mark.assets
def test_real_assets_render_or_are_quarantined_with_a_reason(tmp_path, ray_cluster, assets_dir):
    out = tmp_path / "out"
    cfg = RenderJobConfig(
        source=LocalSourceConfig(root=str(assets_dir)),
        render=RenderSettings(
            num_views=4, rings=1, resolution=32, samples=2, framing="bounding_sphere"
        ),
        output_dir=str(out),
        time_limit_s=300,
        progress=False,
    )
    summary = run_job(cfg)
    ledger = {Path(e.path).name: e for e in read_ledger(out).values()}
    staged = {Path(r.meta.asset_path).name for r in read_rings(str(out / "shards"), views=[0])}
    meshes = {p.name for p in (assets_dir / "meshes").iterdir()}
    broken = {p.name for p in (assets_dir / "broken").iterdir()}
    assert meshes <= staged, ledger
    assert broken <= staged | set(ledger)  # every broken file accounted for
    assert not staged & set(ledger)
    valid_reasons = {r.value for r in Reason}
    assert all(e.reason in valid_reasons and e.detail for e in ledger.values())
    others = {p.name for p in assets_dir.iterdir() if p.is_file()}  # SOURCES.md: not an object
    assert all(ledger[name].reason == Reason.UNSUPPORTED_FORMAT.value for name in others)
    assert summary["objects_in_source"] == len(meshes | broken | others)  # prompts/*.png: images


# -- config (no Ray) ----------------------------------------------------------------------------

CONF = Path(__file__).resolve().parents[2] / "conf"
SOURCE_OVERRIDES = {
    "builtin": [],
    "local": ["source.root=/data"],
    "objaverse": ["source.limit=3"],
    "objaverse_xl": ["source.limit=3", "source.sources=[github,smithsonian]"],
}


@pytest.mark.parametrize("source", sorted(p.stem for p in (CONF / "source").glob("*.yaml")))
@pytest.mark.parametrize("render", sorted(p.stem for p in (CONF / "render").glob("*.yaml")))
def test_every_source_and_render_config_composes_to_typed_config(source, render):
    from contract.hydra_compose import compose
    from data_pipeline.job.config import register_configs, to_job_config

    register_configs()
    overrides = [f"source={source}", f"render={render}", *SOURCE_OVERRIDES[source]]
    cfg = to_job_config(compose("render", overrides))
    assert cfg.source.kind == source
    assert isinstance(cfg.render, RenderSettings) and cfg.render.num_views % 4 == 0
    if render == "default":  # SPEC 3 defaults stay the defaults
        assert (cfg.render.num_views, cfg.render.rings, cfg.render.resolution) == (32, 2, 256)


def test_config_checks_refuse_bad_values():
    with pytest.raises(ValueError, match="max_attempts"):
        RenderJobConfig(source=LocalSourceConfig(root="/x"), max_attempts=0)
    with pytest.raises(ValueError, match="num_shards"):
        RenderJobConfig(source=LocalSourceConfig(root="/x"), num_shards=0)


def test_wandb_offline_run_is_written(tmp_path, ray_cluster, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    root = make_assets(tmp_path / "a", {"one": "fine"})
    cfg = job_config(tmp_path / "out", root)
    cfg.wandb.mode = "offline"
    run_job(cfg, renderer=FAKE)
    runs = list((tmp_path / "out" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    assert list(runs[0].glob("files/media/images/quality/contact_sheet_*.png"))  # the report
