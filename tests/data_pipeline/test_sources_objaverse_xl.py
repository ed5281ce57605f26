"""Objaverse-XL against a folder laid out like the package's cache (~/.objaverse), offline:
every way the package could reach the network (sockets, git clone) fails loudly in here."""

from __future__ import annotations

import hashlib
import json
import pickle
import socket
from pathlib import Path

import pandas as pd
import pytest
from objaverse.utils import get_uid_from_str
from objaverse.xl.github import GitHubDownloader

from contract.schema import validate_uid
from data_pipeline.refusals import Reason, Refusal
from data_pipeline.sources import (
    ObjaverseXLSource,
    ObjaverseXLSourceConfig,
    SourceError,
    build_source,
)

TINY = dict(num_views=4, rings=1, resolution=16, samples=1)


class NetworkBlocked(OSError):
    """Raised by every patched network entry point (an OSError, as socket errors are)."""


@pytest.fixture(autouse=True)
def no_network(monkeypatch) -> list[str]:
    """Sockets and git clone raise NetworkBlocked; returns the attempts made in this process
    (download pools fork from it, so their attempts raise too, but are not recorded here)."""
    attempts: list[str] = []

    def blocked(*args, **_kw):
        attempts.append(repr(args[:2]))
        raise NetworkBlocked(f"test: network access attempted {args[:2]!r}")

    monkeypatch.setattr(socket.socket, "connect", blocked)
    monkeypatch.setattr(socket, "create_connection", blocked)
    monkeypatch.setattr(socket, "getaddrinfo", blocked)
    monkeypatch.setattr(
        GitHubDownloader, "_git_shallow_clone", classmethod(lambda cls, url, target: blocked(url))
    )
    return attempts


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def github_url(repo: str, path: str, commit: str = "c0ffee") -> str:
    return f"https://github.com/{repo}/blob/{commit}/{path}"


THING = "https://www.thingiverse.com/thing:1234/fileId=5678"
SMITH = "https://3d-api.si.edu/content/document/3d_package:abc/resources/fossil-150k.glb"
SMITH_GONE = "https://3d-api.si.edu/content/document/3d_package:def/resources/bird-150k.glb"
SKETCH = "https://sketchfab.com/3d-models/" + "a" * 32


def make_xl_cache(root: Path) -> tuple[Path, dict[str, str]]:
    """~/.objaverse-like folder: four annotation parquets and some downloaded objects.

    Returns the folder and name -> sha256 of the listed objects. Downloaded: chair (github, also
    listed by a mirror repository), lamp (sketchfab), fossil (smithsonian), bracket
    (thingiverse), changed (github, but the file on disk is not the annotated one). Not
    downloaded: gone (github), bird (smithsonian), scene (github .fbx), vrml (github .wrl, a
    format no importer reads).
    """
    cache = root / "objaverse"
    shas: dict[str, str] = {}
    rows: dict[str, list[dict]] = {
        s: [] for s in ("github", "thingiverse", "sketchfab", "smithsonian")
    }

    def add(name, source, ident, file_type, license, rel=None, data=None, metadata=None):
        data = data if data is not None else f"xl test object {name}".encode()
        if rel is not None:
            (cache / rel).parent.mkdir(parents=True, exist_ok=True)
            (cache / rel).write_bytes(data)
        shas[name] = _sha(data)
        rows[source].append(
            dict(
                fileIdentifier=ident,
                source=source,
                license=license,
                fileType=file_type,
                sha256=shas[name],
                metadata=json.dumps(metadata or {}),
            )
        )

    chair = github_url("acme/chairs", "models/red_chair.glb")
    add(
        "chair",
        "github",
        chair,
        "glb",
        "MIT License",
        "github/repos/acme/chairs/models/red_chair.glb",
    )
    rows["github"].append({**rows["github"][0], "fileIdentifier": github_url("zz/mirror", "c.glb")})
    add("gone", "github", github_url("gone/repo", "thing.obj"), "obj", "MIT License")
    add("scene", "github", github_url("acme/scenes", "s.fbx"), "fbx", "Apache License 2.0")
    add(
        "changed",
        "github",
        github_url("acme/chairs", "models/blue_chair.glb"),
        "glb",
        "MIT License",
        "github/repos/acme/chairs/models/blue_chair.glb",
    )
    shas["changed"] = rows["github"][-1]["sha256"] = _sha(b"what the annotations were made from")
    add("bracket", "thingiverse", THING, "stl", "Creative Commons - Attribution",
        "thingiverse/thing-1234-file-5678.stl")  # fmt: skip
    add("lamp", "sketchfab", SKETCH, "glb", "by", f"hf-objaverse-v1/glbs/000-001/{'a' * 32}.glb")
    add("fossil", "smithsonian", SMITH, "glb", "CC0",
        f"smithsonian/objects/{get_uid_from_str(SMITH)}.glb")  # fmt: skip
    bird = {"name": "Blue Jay", "tags": [{"name": "bird"}, {"name": "specimen"}]}
    add("bird", "smithsonian", SMITH_GONE, "glb", "CC0", metadata=bird)
    add("vrml", "github", github_url("acme/old", "w.wrl"), "wrl", "MIT License")  # no importer
    for source, table in rows.items():
        (cache / source).mkdir(parents=True, exist_ok=True)
        pd.DataFrame(table).to_parquet(cache / source / f"{source}.parquet")
    return cache, shas


@pytest.fixture
def xl_cache(tmp_path) -> tuple[Path, dict[str, str]]:
    return make_xl_cache(tmp_path)


def listed(cache: Path, **cfg) -> dict[str, object]:
    source = ObjaverseXLSource(ObjaverseXLSourceConfig(cache_dir=str(cache), **cfg))
    return {s.uid: s for s in source.list_objects()}


def test_selection_by_source_type_license_uids_and_limit(xl_cache, tmp_path, no_network):
    cache, sha = xl_cache
    everything = listed(cache)
    names = {v: k for k, v in sha.items()}
    assert sorted(names[u] for u in everything) == sorted(sha)  # the mirror's copy: one object
    assert list(everything) == sorted(everything)  # sorted by uid
    assert sorted(names[u] for u in listed(cache, sources=["github"])) == [
        "chair", "changed", "gone", "scene", "vrml"
    ]  # fmt: skip
    assert sorted(names[u] for u in listed(cache, sources=["smithsonian", "thingiverse"])) == [
        "bird", "bracket", "fossil"
    ]  # fmt: skip
    by_type = listed(cache, file_types=[".GLB", "stl"])
    assert sorted(names[u] for u in by_type) == [
        "bird",
        "bracket",
        "chair",
        "changed",
        "fossil",
        "lamp",
    ]
    by_license = listed(cache, licenses=["mit license", "CC0"])
    assert sorted(names[u] for u in by_license) == [
        "bird", "chair", "changed", "fossil", "gone", "vrml"
    ]  # fmt: skip
    assert [names[u] for u, s in everything.items() if s.unsupported] == ["vrml"]
    uid_file = tmp_path / "uids.txt"
    uid_file.write_text(f"{THING}\n\n{sha['lamp'].upper()}\n")
    chosen = listed(cache, uids=[sha["chair"]], uid_file=str(uid_file))
    assert sorted(names[u] for u in chosen) == ["bracket", "chair", "lamp"]
    assert list(listed(cache, limit=3)) == sorted(sha.values())[:3]
    assert list(listed(cache, sources=["github"], file_types=["glb"], limit=1)) == [
        min(sha["chair"], sha["changed"])
    ]
    with pytest.raises(ValueError, match="unknown"):
        ObjaverseXLSourceConfig(sources=["github", "polyhaven"])
    assert no_network == []  # listing a complete cache never touches the network


def test_uids_are_the_sha256_stable_under_row_order(xl_cache, tmp_path):
    cache, sha = xl_cache
    first = listed(cache)
    for uid, spec in first.items():
        validate_uid(uid)
        assert spec.sha256 == uid and spec.source.startswith("objaverse_xl/")
    chair = first[sha["chair"]]
    assert chair.path == github_url("acme/chairs", "models/red_chair.glb")  # not the mirror's
    assert chair.source == "objaverse_xl/github"
    # the same annotations in another row order (and as one CSV file) give the same objects
    table = pd.concat(pd.read_parquet(p) for p in sorted(cache.glob("*/*.parquet")))
    table.sample(frac=1.0, random_state=3).to_csv(tmp_path / "annotations.csv", index=False)
    again = listed(tmp_path / "elsewhere", annotations_file=str(tmp_path / "annotations.csv"))
    assert [(s.uid, s.path, s.source) for s in again.values()] == [
        (s.uid, s.path, s.source) for s in first.values()
    ]


def test_captions_from_file_metadata_or_file_name(xl_cache, tmp_path):
    cache, sha = xl_cache
    captions = tmp_path / "captions.csv"
    captions.write_text(f'uid,caption\n{sha["fossil"]},"a fossil, in a case"\n{THING},a bracket\n')
    specs = listed(cache, captions_file=str(captions))
    assert specs[sha["fossil"]].caption == "a fossil, in a case"  # by sha256
    assert specs[sha["bracket"]].caption == "a bracket"  # by fileIdentifier
    assert specs[sha["bird"]].caption == "Blue Jay, bird, specimen"  # annotation metadata
    assert specs[sha["chair"]].caption == "red chair"  # file name
    # objaverse.xl blanks the metadata of Sketchfab rows: a captions file (Cap3D) names those
    assert specs[sha["lamp"]].caption == "a" * 32


def test_fetch_from_cache_checks_sha256_and_failures_are_refusals(xl_cache):
    cache, sha = xl_cache
    source = ObjaverseXLSource(ObjaverseXLSourceConfig(cache_dir=str(cache)))
    specs = {s.uid: s for s in source.list_objects()}
    for name in ("chair", "bracket", "lamp", "fossil"):
        path = source.fetch(specs[sha[name]])
        assert path.is_file() and path.is_relative_to(cache)
        assert _sha(path.read_bytes()) == sha[name]
    expected = {
        "gone": "network access attempted",  # the repository is not cached: git clone
        "bird": "network access attempted",  # not cached: the package requests it
        "changed": "changed upstream",  # cached, but not the annotated file
        "vrml": "not a 3D format",  # unsupported_format, never downloaded
    }
    for name, words in expected.items():
        with pytest.raises(Refusal) as info:
            source.fetch(specs[sha[name]])
        want = Reason.UNSUPPORTED_FORMAT if name == "vrml" else Reason.FETCH_FAILED
        assert info.value.reason is want, name
        assert words in info.value.detail, (name, info.value.detail)
    assert len(pickle.dumps(source)) < 2000  # what each Ray actor receives: the config only


def test_a_stalled_download_is_killed_after_its_timeout(xl_cache, monkeypatch):
    import time

    import objaverse.xl

    cache, sha = xl_cache
    monkeypatch.setattr(objaverse.xl, "download_objects", lambda *a, **k: time.sleep(600))
    source = ObjaverseXLSource(ObjaverseXLSourceConfig(cache_dir=str(cache), download_timeout_s=1))
    (spec,) = [s for s in source.list_objects() if s.uid == sha["bird"]]
    start = time.monotonic()
    with pytest.raises(Refusal, match="exceeded 1 s; killed") as info:
        source.fetch(spec)
    assert info.value.reason is Reason.FETCH_FAILED and time.monotonic() - start < 30


def test_download_failure_is_quarantined_and_the_rest_renders(xl_cache, tmp_path):
    """The worker (what each Ray actor runs) and the job's bookkeeping, without Ray: the objects
    whose download fails land in the ledger with their reason; the others are staged."""
    from data_pipeline.job.ledger import read_ledger, staged_objects
    from data_pipeline.job.state import JobState, record
    from data_pipeline.job.worker import RenderWorker
    from data_pipeline.render.settings import RenderSettings
    from tests.data_pipeline.fakes import FAKE

    cache, sha = xl_cache
    source = build_source(ObjaverseXLSourceConfig(cache_dir=str(cache)), tmp_path / "out")
    specs = [s for s in source.list_objects() if s.uid in {sha["chair"], sha["bird"], sha["gone"]}]
    out = tmp_path / "out"
    out.mkdir()
    worker = RenderWorker(
        source, RenderSettings(**TINY), time_limit_s=60, max_attempts=2,
        work_dir=out / "work", renderer=FAKE,
    )  # fmt: skip
    job = JobState(out=out, source_name=source.name)
    try:
        for spec in specs:
            record(job, worker.process_object(spec))
    finally:
        worker.close()
    assert set(staged_objects(out)) == {sha["chair"]}
    entries = read_ledger(out)
    assert set(entries) == {sha["bird"], sha["gone"]}
    for entry in entries.values():
        assert (entry.reason, entry.attempts) == (Reason.FETCH_FAILED.value, 2)
        assert entry.path.startswith("https://") and entry.detail
        assert entry.source == "objaverse_xl"


def test_offline_without_cache_fails_fast_naming_the_annotations(tmp_path, no_network):
    source = ObjaverseXLSource(
        ObjaverseXLSourceConfig(sources=["smithsonian"], cache_dir=str(tmp_path / "empty"))
    )
    with pytest.raises(SourceError, match=r"smithsonian\.parquet.*source\.cache_dir"):
        list(source.list_objects())
    assert no_network, "the package tried to download the annotations, and was stopped"
    with pytest.raises(SourceError, match="does not exist"):
        list(listed(tmp_path, annotations_file=str(tmp_path / "missing.csv")))
