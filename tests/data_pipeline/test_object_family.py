"""The procedural family behind `source=builtin source.count=N`: seeded, distinct, asymmetric,
with a train / held-out split that never shares an object."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from data_pipeline.sources import BuiltinSourceConfig, build_source
from data_pipeline.sources.object_family import (
    member,
    member_glb,
    member_name,
    member_names,
    split_of,
    write_family,
)


def test_same_name_same_bytes_and_different_names_differ() -> None:
    a, b = member_glb("proc-00007"), member_glb("proc-00007")
    assert hashlib.sha256(a).digest() == hashlib.sha256(b).digest()
    digests = {hashlib.sha256(member_glb(member_name(i))).digest() for i in range(30)}
    assert len(digests) == 30
    captions = {member(member_name(i))[0] for i in range(100)}
    assert len(captions) == 100  # at least 100 distinct objects, told apart by their captions


def test_every_member_differs_front_back_left_right() -> None:
    for i in range(20):
        caption, parts, palette = member(member_name(i))
        body, front, back, left, right = parts[:5]
        assert front.centre[1] < body.centre[1] < back.centre[1]  # front at -Y, back at +Y
        assert left.centre[0] < 0 < right.centre[0]
        colours = [p.colour for p in parts]
        assert len(set(colours)) == len(colours) == len(palette)  # every side its own colour
        assert front.size != back.size and left.size != right.size
        assert all(c in caption for c in colours)


def test_the_split_is_disjoint_stable_and_covers_the_family() -> None:
    train, heldout = member_names(300, "train"), member_names(300, "heldout")
    assert not set(train) & set(heldout)
    assert sorted(train + heldout) == member_names(300)
    assert 15 <= len(heldout) <= 45  # about 10 %
    assert all(split_of(n) == "heldout" for n in heldout)
    assert member_names(300, "heldout") == heldout  # a function of the name alone
    # growing the family never moves a member across the split
    assert set(member_names(100, "heldout")) <= set(heldout)


def test_builtin_source_writes_the_split(tmp_path) -> None:
    paths = write_family(tmp_path / "a", 40, "heldout")
    assert [p.stem for p in paths] == member_names(40, "heldout")
    assert all(p.with_suffix(".txt").read_text().strip() == member(p.stem)[0] for p in paths)
    source = build_source(BuiltinSourceConfig(count=40, split="train"), tmp_path / "out")
    stems = {p.name.split(".")[0] for p in (tmp_path / "out" / "builtin_assets").glob("*.glb")}
    assert stems == set(member_names(40, "train")) and source is not None
    with pytest.raises(ValueError, match="count > 0"):
        BuiltinSourceConfig(split="train")


def test_a_member_is_a_valid_textured_asset(tmp_path) -> None:
    from data_pipeline.formats.mesh_inspection import inspect_asset

    (path,) = write_family(tmp_path, 1)
    report = inspect_asset(path)
    assert report.num_faces > 0
    import trimesh

    mesh = trimesh.load(path, force="mesh")
    image = np.asarray(mesh.visual.material.baseColorTexture.convert("RGB"))
    assert len({tuple(px) for px in image.reshape(-1, 3)}) >= 6
