"""Sources: local folders and manifests, captions, and objaverse against a cache-shaped folder."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from contract.schema import validate_uid
from data_pipeline.refusals import Reason, Refusal
from data_pipeline.sources import (
    SOURCE_KINDS,
    LocalSource,
    LocalSourceConfig,
    ObjaverseSource,
    ObjaverseSourceConfig,
    SourceError,
    build_source,
)
from data_pipeline.sources.captions import load_captions_csv
from data_pipeline.sources.local import local_uid
from tests.data_pipeline.assets import make_objaverse_cache

CONF = Path(__file__).resolve().parents[2] / "conf"


def test_registry_has_one_entry_per_source_yaml(tmp_path):
    assert set(SOURCE_KINDS) == {p.stem for p in (CONF / "source").glob("*.yaml")}
    assert all(entry.config.kind == kind for kind, entry in SOURCE_KINDS.items())
    source = build_source(LocalSourceConfig(root=str(tmp_path)), tmp_path / "out")
    assert type(source) is LocalSource and source.prefetch([]) is None  # nothing to prefetch
    with pytest.raises(ValueError, match="unknown source kind 'nope'"):
        build_source(ObjaverseSourceConfig(kind="nope"), tmp_path / "out")


# -- local --------------------------------------------------------------------------------------


def test_local_folder_uids_captions_and_extensions(tmp_path):
    root = tmp_path / "assets"
    (root / "a" / "deep").mkdir(parents=True)
    (root / "b").mkdir()
    for rel in ["a/chair.glb", "b/chair.glb", "a/deep/My Mesh.v2.OBJ", "b/notes.md", "b/x.ply"]:
        (root / rel).write_bytes(b"x")
    (root / "a" / "chair.txt").write_text("  a wooden\nchair \n")
    captions = tmp_path / "captions.csv"
    x_uid = local_uid("b/x.ply")
    captions.write_text(f'uid,caption\n{x_uid},"a red, shiny ply"\n')

    specs = list(
        LocalSource(LocalSourceConfig(root=str(root), captions_file=str(captions))).list_objects()
    )
    by_path = {Path(s.path).relative_to(root.resolve()).as_posix(): s for s in specs}
    assert sorted(by_path) == [
        "a/chair.glb", "a/deep/My Mesh.v2.OBJ", "b/chair.glb", "b/notes.md", "b/x.ply"
    ]  # fmt: skip
    assert "'.md' is not a 3D format" in str(by_path.pop("b/notes.md").unsupported)
    assert all(s.unsupported is None for s in by_path.values())
    uids = [s.uid for s in specs]
    assert len(set(uids)) == len(uids)  # same stem in two folders: still unique
    assert all(validate_uid(u) for u in uids)
    assert by_path["a/deep/My Mesh.v2.OBJ"].uid.startswith("My-Mesh-v2-")
    assert by_path["a/chair.glb"].caption == "a wooden chair"  # sidecar
    assert by_path["b/chair.glb"].caption == "chair"  # file name
    assert by_path["b/x.ply"].caption == "a red, shiny ply"  # captions file wins
    assert {s.source for s in specs} == {"local"}

    # uids do not depend on where the folder is mounted
    moved = tmp_path / "elsewhere"
    shutil.copytree(root, moved)
    assert sorted(
        s.uid for s in LocalSource(LocalSourceConfig(root=str(moved))).list_objects()
    ) == sorted(uids)


def test_local_folder_lists_every_file_but_companions_and_marks_unsupported_ones(tmp_path):
    """Nothing in a folder is skipped silently: objects of every format, files of unknown formats
    (marked `unsupported`, with the reason), and companions (textures, .mtl, .bin, captions,
    hidden files, the captions file itself) left out."""
    root = tmp_path / "assets"
    names = [
        "chair.obj", "chair.mtl", "chair.txt", "tex/wood.png", "scene.gltf", "scene.bin",
        "robot.fbx", "shell.off", "tree.usdz", "anim.abc", "room.blend", "room.blend1",
        "car.3ds", "notes.txt", ".DS_Store", ".git/HEAD", "captions.csv",
    ]  # fmt: skip
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    (root / "captions.csv").write_text("uid,caption\n")
    cfg = LocalSourceConfig(root=str(root), captions_file=str(root / "captions.csv"))
    source = LocalSource(cfg)
    specs = {Path(s.path).name: s for s in source.list_objects()}
    objects = ["anim.abc", "chair.obj", "robot.fbx", "room.blend", "scene.gltf", "shell.off"]
    assert sorted(specs) == sorted([*objects, "tree.usdz", "car.3ds", "notes.txt"])
    assert all(specs[n].unsupported is None for n in [*objects, "tree.usdz"])
    assert "'.3ds' is not a 3D format" in str(specs["car.3ds"].unsupported)
    assert "'.txt' is not a 3D format" in str(specs["notes.txt"].unsupported)
    with pytest.raises(Refusal) as info:  # a worker handed one refuses it the same way
        source.fetch(specs["car.3ds"])
    assert info.value.reason is Reason.UNSUPPORTED_FORMAT and info.value.path.endswith("car.3ds")

    # a format the pipeline renders but the config leaves out is quarantined, not skipped
    narrow = LocalSource(LocalSourceConfig(root=str(root), extensions=["obj", ".GLTF"]))
    fbx = next(s for s in narrow.list_objects() if s.path.endswith("robot.fbx"))
    assert "not in source.extensions (.gltf .obj)" in str(fbx.unsupported)
    with pytest.raises(ValueError, match=r"\.3ds not a format the pipeline renders"):
        LocalSourceConfig(root=str(root), extensions=[".glb", ".3ds"])


def test_local_manifest_forms_and_fetch_failure(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "one.glb").write_bytes(b"x")
    csv_manifest = tmp_path / "m" / "list.csv"
    csv_manifest.write_text(
        "path,uid,caption\none.glb,custom_uid,a custom caption\nmissing.stl,,\n"
    )
    specs = list(LocalSource(LocalSourceConfig(manifest=str(csv_manifest))).list_objects())
    assert (specs[0].uid, specs[0].caption) == ("custom_uid", "a custom caption")
    source = LocalSource(LocalSourceConfig(manifest=str(csv_manifest)))
    assert source.fetch(specs[0]) == (tmp_path / "m" / "one.glb").resolve()
    with pytest.raises(Refusal) as info:
        source.fetch(specs[1])
    assert info.value.reason is Reason.FETCH_FAILED

    jsonl = tmp_path / "m" / "list.jsonl"
    jsonl.write_text(json.dumps({"path": "one.glb", "caption": "c"}) + "\n")
    (spec,) = LocalSource(LocalSourceConfig(manifest=str(jsonl))).list_objects()
    assert spec.caption == "c" and spec.uid == local_uid("one.glb")

    plain = tmp_path / "m" / "list.txt"
    plain.write_text("# comment\none.glb\n")
    assert len(list(LocalSource(LocalSourceConfig(manifest=str(plain))).list_objects())) == 1

    bad = tmp_path / "m" / "bad.csv"
    bad.write_text("path,uid\none.glb,has.dot\n")
    with pytest.raises(SourceError, match=r"has.dot"):
        list(LocalSource(LocalSourceConfig(manifest=str(bad))).list_objects())


def test_local_config_needs_root_or_manifest():
    with pytest.raises(ValueError, match="exactly one"):
        LocalSourceConfig()
    with pytest.raises(SourceError, match="not a folder"):
        list(LocalSource(LocalSourceConfig(root="/nonexistent/folder")).list_objects())


def test_captions_csv(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('u1,"a cat, sitting"\nu2,plain\n\n')
    assert load_captions_csv(path) == {"u1": "a cat, sitting", "u2": "plain"}


# -- objaverse ----------------------------------------------------------------------------------


@pytest.fixture
def objaverse_cache(tmp_path) -> tuple[Path, list[str]]:
    return make_objaverse_cache(tmp_path)


def test_objaverse_lists_and_fetches_from_local_cache(objaverse_cache, tmp_path):
    cache, uids = objaverse_cache
    source = ObjaverseSource(ObjaverseSourceConfig(lvis_categories=["thing"], cache_dir=str(cache)))
    specs = list(source.list_objects())
    assert [s.uid for s in specs] == sorted(uids[:2])
    assert all(s.source == "objaverse" for s in specs)
    assert specs[0].caption.endswith(", sample")  # "name, tag" from the metadata
    assert (
        source.fetch(specs[0]).read_bytes() == (cache / f"glbs/000-000/{uids[0]}.glb").read_bytes()
    )

    captions = tmp_path / "cap3d.csv"
    captions.write_text(f"{uids[0]},a Cap3D caption\n")
    uid_file = tmp_path / "uids.txt"
    uid_file.write_text(f"{uids[0]}\n{uids[-1]}.glb\n")
    source = ObjaverseSource(
        ObjaverseSourceConfig(
            uids=[uids[1]],
            uid_file=str(uid_file),
            captions_file=str(captions),
            cache_dir=str(cache),
            limit=2,
        )
    )
    specs = list(source.list_objects())
    assert [s.uid for s in specs] == sorted(uids)[:2]
    assert specs[0].caption == "a Cap3D caption"

    everything = ObjaverseSource(ObjaverseSourceConfig(cache_dir=str(cache)))
    assert len(list(everything.list_objects())) == len(uids) + 1


@pytest.mark.filterwarnings("ignore:Could not find object")  # objaverse's own note on "e..."
def test_objaverse_object_missing_from_cache_is_a_refusal_not_a_crash(objaverse_cache, monkeypatch):
    cache, _ = objaverse_cache
    source = ObjaverseSource(ObjaverseSourceConfig(uids=["f" * 32, "e" * 32], cache_dir=str(cache)))
    specs = list(source.list_objects())

    def no_network(*_a, **_k):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr("urllib.request.urlretrieve", no_network)
    for spec in specs:  # "f..." is listed but not downloaded; "e..." is unknown
        with pytest.raises(Refusal) as info:
            source.fetch(spec)
        assert info.value.reason is Reason.FETCH_FAILED


def test_objaverse_offline_without_cache_fails_fast_and_clearly(tmp_path, monkeypatch):
    def no_network(url, *_a, **_k):
        raise OSError(f"<urlopen error [Errno -3] Temporary failure in name resolution> {url}")

    # The machine is offline anyway; the patch keeps the test fast and honest elsewhere.
    monkeypatch.setattr("urllib.request.urlretrieve", no_network)
    source = ObjaverseSource(
        ObjaverseSourceConfig(uids=["a" * 32], cache_dir=str(tmp_path / "empty"))
    )
    start = time.monotonic()
    with pytest.raises(SourceError, match=r"object-paths\.json\.gz.*source\.cache_dir"):
        list(source.list_objects())
    assert time.monotonic() - start < 5
    with pytest.raises(SourceError, match="lvis-annotations"):
        ObjaverseSource(
            ObjaverseSourceConfig(lvis_categories=["chair"], cache_dir=str(tmp_path / "e2"))
        ).select_uids()
