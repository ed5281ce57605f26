"""The render worker alone, without Ray (what each Ray actor runs): a hung render is killed at
its time limit, a crashed or failed one retried in a fresh process, refusals kept as final, and
its work folder removed when it closes. `fake_render` (fakes.py) stands in for Blender."""

from __future__ import annotations

from pathlib import Path

from data_pipeline.job.worker import RenderWorker
from data_pipeline.refusals import Reason
from data_pipeline.render.settings import RenderSettings
from data_pipeline.sources import LocalSource, LocalSourceConfig
from tests.data_pipeline.fakes import FAKE, TINY, make_assets


def test_worker_kills_hung_render_retries_transient_and_keeps_final_reasons(tmp_path):
    root = make_assets(
        tmp_path / "a",
        {
            "ok": "fine",
            "hang": "hang",
            "crash": "crash",
            "refuse": "refuse",
            "flaky": "flaky",
            "boom": "boom",
        },
    )
    source = LocalSource(LocalSourceConfig(root=str(root)))
    worker = RenderWorker(
        source,
        RenderSettings(**TINY),
        time_limit_s=2.0,
        max_attempts=2,
        work_dir=tmp_path / "work",
        renderer=FAKE,
    )
    worker.warm_up()
    try:
        results = {Path(s.path).stem: (s, worker.process_object(s)) for s in source.list_objects()}
    finally:
        worker.close()
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["logs"]  # its folder is gone
    by_name = {name: r for name, (_, r) in results.items()}
    assert by_name["ok"].ok and by_name["ok"].rings == 2 and by_name["ok"].attempts == 1
    assert by_name["flaky"].ok and by_name["flaky"].attempts == 2
    hang = by_name["hang"]
    assert (hang.reason, hang.attempts) == (Reason.TIMEOUT.value, 2)
    assert 4.0 <= hang.wall_seconds < 60.0  # two attempts of 2 s each (+ restarts), not 3600 s
    assert (by_name["crash"].reason, by_name["crash"].attempts) == (Reason.WORKER_CRASHED.value, 2)
    assert "exit 3" in by_name["crash"].detail
    assert (by_name["refuse"].reason, by_name["refuse"].attempts) == (Reason.NO_FACES.value, 1)
    assert not by_name["refuse"].unexpected
    boom = by_name["boom"]  # not a refusal: retried in a fresh process, flagged unexpected
    assert (boom.reason, boom.attempts, boom.unexpected) == (Reason.RENDER_ERROR.value, 2, True)
    assert "boom" in boom.detail


class _DownloadingSource:
    """A source whose fetch writes the asset into the worker's scratch, as objects in object
    storage are fetched (LocalSource with a URL root)."""

    name = "downloading"

    def __init__(self, specs):
        self.specs = specs

    def list_objects(self):
        return iter(self.specs)

    def prefetch(self, specs):
        return None

    def fetch(self, spec, scratch=None):
        path = scratch / spec.uid / "object.glb"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("fine")
        return path


def test_a_downloaded_asset_survives_the_render_process_being_recycled(tmp_path):
    """The render process is replaced after `recycle_after` objects, and replacing it empties its
    temporary folder; the next object, already downloaded into the worker's scratch, must still
    be there when the fresh process renders it."""
    from data_pipeline.sources import ObjectSpec

    specs = [
        ObjectSpec(uid=f"o{i}", path=f"s3://b/o{i}.glb", caption="", source="x") for i in range(3)
    ]
    worker = RenderWorker(
        _DownloadingSource(specs),
        RenderSettings(**TINY),
        time_limit_s=30.0,
        max_attempts=1,
        work_dir=tmp_path / "work",
        renderer=FAKE,
        recycle_after=1,
    )
    worker.warm_up()
    try:
        results = [worker.process_object(s) for s in specs]
    finally:
        worker.close()
    assert [(r.ok, r.attempts, r.detail) for r in results] == [(True, 1, "")] * 3
