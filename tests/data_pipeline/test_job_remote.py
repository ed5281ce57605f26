"""The render job with its output (and its source) in object storage: a local S3-compatible
server (moto, tests/conftest.py) stands in for S3. `fake_render` (fakes.py) stands in for
Blender; the two-node cluster test is in test_cluster.py."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from contract import storage
from contract.dataset_index import read_index
from contract.shard_reader import read_rings
from data_pipeline.job.config import RayConfig
from data_pipeline.job.ledger import (
    LEDGER_FILE,
    RENDERED_FILE,
    read_ledger,
    read_rendered,
)
from data_pipeline.job.quality import main as quality_main
from data_pipeline.job.run import run_job
from data_pipeline.refusals import Reason, Refusal
from data_pipeline.sources import BuiltinSourceConfig, LocalSource, LocalSourceConfig, ObjectSpec
from tests.data_pipeline.fakes import FAKE, job_config, make_assets
from tests.s3_env import point_at_s3


@pytest.fixture(scope="module")
def s3_ray(s3_server):
    """A local Ray cluster started with the S3 environment, so its workers inherit it (Ray's
    workers take the environment of the process that started the cluster)."""
    ray = pytest.importorskip("ray")
    with pytest.MonkeyPatch.context() as mp:
        point_at_s3(mp, s3_server)
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
        yield
        ray.shutdown()


def keys_in_shards(shards: str) -> Counter[str]:
    return Counter(rec.key for rec in read_rings(shards, views=[0]))


def test_job_to_object_storage_writes_the_same_dataset_and_nothing_local(
    tmp_path, s3, s3_ray, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # a URL taken for a local path would appear here
    assets = make_assets(
        tmp_path / "a", {"one": "fine", "two": "fine note", "bad": "refuse", "three": "fine"}
    )
    (assets / "two.txt").write_text("a two with a caption")
    (assets / "notes.xyz").write_text("not a mesh")
    src = s3.upload(assets, "src")
    out = f"{s3.url}/out"
    scratch = tmp_path / "scratch"
    summary = run_job(
        job_config(out, src, work_dir=str(scratch), ray=RayConfig(workers=2)), renderer=FAKE
    )

    assert summary["this_run"]["rendered"] == 3
    index = read_index(f"{out}/shards")
    keys = keys_in_shards(f"{out}/shards")
    assert set(keys.values()) == {1} and len(keys) == 3 * 2 == index.num_rings
    captions = {r.meta.caption for r in read_rings(f"{out}/shards", views=[0])}
    assert "a two with a caption" in captions  # the sidecar, read from object storage
    reasons = {Path(e.path).name: e.reason for e in read_ledger(out).values()}
    assert reasons == {
        "bad.glb": Reason.NO_FACES.value,
        "notes.xyz": Reason.UNSUPPORTED_FORMAT.value,
    }
    # the per-record objects were folded into the .jsonl files when the job finished
    for name in (LEDGER_FILE, RENDERED_FILE):
        assert s3.fs.exists(f"{out}/{name}")
        assert not s3.fs.exists(f"{out}/{name}.d")
    assert len(read_rendered(out)) == 3
    for name in ("summary.json", "job.json", "quality.html", "quality.json"):
        assert s3.fs.exists(f"{out}/{name}"), name
    assert json.loads(s3.fs.cat_file(f"{out}/summary.json"))["output_dir"] == out
    # nothing under a local path named like the URL; render scratch is where work_dir says
    assert not (tmp_path / "s3:").exists()
    assert list((scratch / "logs").glob("render-*.log"))
    assert not list(scratch.glob("render-*")), "live work folders left behind"

    s3.fs.rm_file(f"{out}/quality.html")
    quality_main([out])  # the report's CLI on a URL OUT
    assert b"no_faces" in s3.fs.cat_file(f"{out}/quality.html")

    again = run_job(job_config(out, src, work_dir=str(scratch)), renderer=FAKE)
    assert again["resumed"] == {"already_staged": 3, "already_quarantined": 2}
    assert again["this_run"]["rendered"] == 0
    assert keys_in_shards(f"{out}/shards") == keys


def test_builtin_objects_are_uploaded_beside_an_object_store_output(tmp_path, s3, s3_ray):
    out = f"{s3.url}/out"
    cfg = job_config(out, tmp_path, work_dir=str(tmp_path / "scratch"))
    cfg.source = BuiltinSourceConfig()
    summary = run_job(cfg, renderer=FAKE)
    uploaded = s3.fs.find(f"{out}/builtin_assets")
    assert summary["this_run"]["rendered"] == 3 and len(uploaded) >= 3
    assert len(keys_in_shards(f"{out}/shards")) == 3 * 2


def test_source_in_object_storage_lists_as_the_local_folder_and_fetches_companions(tmp_path, s3):
    folder = tmp_path / "objs"
    (folder / "mug" / "tex").mkdir(parents=True)
    (folder / "mug" / "mug.obj").write_text("mtllib mug.mtl\nv 0 0 0\n")
    (folder / "mug" / "mug.mtl").write_text("newmtl m\nmap_Kd tex/wood.png\n")
    (folder / "mug" / "tex" / "wood.png").write_bytes(b"png")
    (folder / "mug" / "mug.txt").write_text("a wooden mug")
    (folder / "mug" / ".DS_Store").write_bytes(b"junk")
    (folder / "chair.glb").write_bytes(b"glb")
    (folder / "readme.md").write_text("not a mesh")
    url = s3.upload(folder, "objs")

    local = sorted(LocalSource(LocalSourceConfig(root=str(folder))).list_objects(), key=str)
    remote = sorted(LocalSource(LocalSourceConfig(root=url)).list_objects(), key=str)
    as_local = [(s.uid, s.caption, bool(s.unsupported)) for s in local]
    assert [(s.uid, s.caption, bool(s.unsupported)) for s in remote] == as_local
    assert all(s.path.startswith(url) for s in remote)

    def fetched(spec):
        path = LocalSource(LocalSourceConfig(root=url)).fetch(spec, scratch=tmp_path / "scratch")
        return path, {
            p.relative_to(path.parent).as_posix() for p in path.parent.rglob("*") if p.is_file()
        }

    path, got = fetched(next(s for s in remote if s.path.endswith("mug.obj")))
    assert path.read_text().startswith("mtllib") and got == {"mug.obj", "mug.mtl", "tex/wood.png"}
    # an object above another's folder does not take that object's textures along
    assert fetched(next(s for s in remote if s.path.endswith("chair.glb")))[1] == {"chair.glb"}
    gone = storage.join(url, "mug/missing.obj")
    with pytest.raises(Refusal) as exc:
        LocalSource(LocalSourceConfig(root=url)).fetch(
            ObjectSpec(uid="m", path=gone, caption="", source="local"), scratch=tmp_path / "s"
        )
    assert exc.value.reason == Reason.FETCH_FAILED and gone in str(exc.value)


def test_a_manifest_in_object_storage_names_objects_relative_to_it(tmp_path, s3):
    folder = make_assets(tmp_path / "m", {"a": "fine", "b": "fine"})
    (folder / "list.csv").write_text("path,caption\n./a.glb,first\nsub/../b.glb,second\n")
    url = s3.upload(folder, "m")
    specs = list(LocalSource(LocalSourceConfig(manifest=f"{url}/list.csv")).list_objects())
    assert [(s.path, s.caption) for s in specs] == [
        (f"{url}/a.glb", "first"),
        (f"{url}/b.glb", "second"),
    ]


def test_a_captions_file_in_object_storage_names_the_captions(tmp_path, s3):
    from data_pipeline.sources.local import local_uid

    folder = make_assets(tmp_path / "c", {"chair": "fine", "lamp": "fine"})
    (folder / "caps.csv").write_text(f'uid,caption\n{local_uid("chair.glb")},"a chair, wooden"\n')
    url = s3.upload(folder, "c")
    cfg = LocalSourceConfig(root=url, captions_file=f"{url}/caps.csv")
    specs = {s.path.rsplit("/", 1)[1]: s for s in LocalSource(cfg).list_objects()}
    assert set(specs) == {"chair.glb", "lamp.glb"}  # the captions file is not an object
    assert specs["chair.glb"].caption == "a chair, wooden"
    assert specs["lamp.glb"].caption == "lamp"


def test_transient_store_errors_are_retried_and_counted_a_lasting_one_quarantined(
    tmp_path, s3, s3_ray, s3_faults
):
    """A few requests answer 500 or SlowDown (source reads, staging writes, shard writes): the
    job writes the same dataset as without them and its summary counts the retries; an object
    whose every read fails is quarantined as a failed fetch naming its URL."""
    assets = make_assets(tmp_path / "a", {"one": "fine", "two": "fine", "three": "fine"})
    src = s3.upload(assets, "src")
    clean = run_job(job_config(f"{s3.url}/clean", src), renderer=FAKE)

    s3_faults.fail("/src/one.glb", times=2)
    s3_faults.fail("/faulty/staging/", times=2, method="PUT")
    s3_faults.fail("/faulty/shards/shard-", times=1, status=503, code="SlowDown", method="PUT")
    out = f"{s3.url}/faulty"
    summary = run_job(job_config(out, src), renderer=FAKE)
    assert summary["this_run"]["rendered"] == 3 and summary["total"]["quarantined"] == 0
    assert keys_in_shards(f"{out}/shards") == keys_in_shards(f"{s3.url}/clean/shards")
    assert summary["store_retries"]["total"] >= 5, summary["store_retries"]
    assert clean["store_retries"]["total"] == 0

    s3_faults.fail("/src/two.glb", times=None)  # every read of it, for good
    lasting = run_job(job_config(f"{s3.url}/lasting", src), renderer=FAKE)
    (entry,) = read_ledger(f"{s3.url}/lasting").values()
    assert entry.reason == Reason.FETCH_FAILED.value and "src/two.glb" in entry.detail
    assert lasting["this_run"]["rendered"] == 2
