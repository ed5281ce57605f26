"""Fuzzing the two places where outside bytes enter the pipeline: the asset inspectors and the
shard reader. Every input, random or a mutated real file, must end in the documented refusal
(`Refusal` for assets, `SchemaError` for shards) or succeed, never in another exception, and
within the hypothesis deadline.

Brief by default (FUZZ_EXAMPLES examples per target, default 50); `make fuzz` sets it high.
Seeds: files the project makes itself (the built-in and procedural GLBs, hand-written OBJ, PLY,
STL and glTF, and the minimal file of every other format in tests/data_pipeline/assets.py: OFF,
FBX, COLLADA, USD text, crate and zip, Alembic, .blend), plus the real test assets in
../shared/assets when present.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import struct
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contract.dataset_index import INDEX_FILE, read_index, write_index
from contract.schema import (
    SchemaError,
    ShardManifest,
    decode_sample,
    encode_sample,
    manifest_path_for,
)
from contract.shard_reader import list_shards, read_rings, verify_shard
from contract.shard_writer import read_tar_samples, write_shard
from data_pipeline.formats import OBJECT_EXTENSIONS
from data_pipeline.formats.mesh_inspection import inspect_asset
from data_pipeline.refusals import Refusal
from tests.data_pipeline.assets import CUBE_OBJ
from tests.data_pipeline.assets import VALID as FORMAT_SEEDS
from tests.data_pipeline.fakes import fake_ring

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "50"))
DEADLINE = timedelta(milliseconds=int(os.environ.get("FUZZ_DEADLINE_MS", "5000")))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=DEADLINE,
    database=None,  # no .hypothesis/ folder in the repo; a failure prints its reproducer
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Real assets larger than this are skipped: trimesh on megabytes would not fit the brief run.
MAX_SEED_BYTES = 512 * 1024
# A hang is a failure too, not a stuck CI job: at most 1 s per example on average.
pytestmark = pytest.mark.timeout(max(300, EXAMPLES))


# ----------------------------------------------------------------------------- mutations


EDIT = st.tuples(
    st.sampled_from(["flip", "set", "cut", "insert", "delete", "dup", "u32"]),
    st.floats(0.0, 1.0),  # where, as a fraction of the current length
    st.integers(0, 255),  # the byte, bit, span length or extreme value this edit uses
    st.binary(min_size=1, max_size=16),  # what "insert" inserts
)
EDITS = st.lists(EDIT, min_size=1, max_size=4)


def mutate(seed: bytes, edits: list[tuple[str, float, int, bytes]]) -> bytes:
    """`seed` after the edits: bit flips, byte overwrites, truncation, insertion, deletion, a
    duplicated span, or a 32-bit field (a length, a count) set to an extreme. Hypothesis shows
    the edits, not the bytes, when a case fails."""
    data = bytearray(seed)
    for op, where, k, blob in edits:
        n = len(data)
        pos = min(int(where * n), max(n - 1, 0))
        if op == "flip" and n:
            data[pos] ^= 1 << (k % 8)
        elif op == "set" and n:
            data[pos] = k
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = blob
        elif op == "delete":
            del data[pos : pos + 1 + k % 64]
        elif op == "dup":
            data[pos:pos] = data[pos : pos + 1 + k % 64]
        elif op == "u32" and n >= pos + 4:
            value = [0, 1, 0x7FFFFFFF, 0xFFFFFFFF, n, n + 1][k % 6]
            data[pos : pos + 4] = struct.pack("<I", value)
    return bytes(data)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False)
    | st.sampled_from([1e308, -1, 0, "1.0", "2.0", "data:", "../x.bin", "a" * 300, "\0"])
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated_json(draw: st.DrawFn, doc: Any) -> Any:
    """`doc` with 1-3 values (anywhere, the root included) replaced or deleted."""
    doc = json.loads(json.dumps(doc))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(doc)))
        value = draw(JSON_VALUES)
        if not path:
            doc = value
            continue
        parent = doc
        try:
            for step in path[:-1]:
                parent = parent[step]
            if draw(st.booleans()) and isinstance(parent, dict):
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = value
        except (KeyError, IndexError, TypeError):  # an earlier edit changed the structure
            continue
    return doc


# ----------------------------------------------------------------------------- asset seeds


def _glb_parts(glb: bytes) -> tuple[dict, bytes]:
    (json_len,) = struct.unpack_from("<I", glb, 12)
    doc = json.loads(glb[20 : 20 + json_len])
    rest = glb[20 + json_len :]
    return doc, rest[8:] if rest else b""


def _glb(doc: Any, blob: bytes) -> bytes:
    text = json.dumps(doc).encode()
    text += b" " * (-len(text) % 4)
    body = struct.pack("<II", len(text), 0x4E4F534A) + text
    if blob:
        body += struct.pack("<II", len(blob), 0x004E4942) + blob
    return b"glTF" + struct.pack("<II", 2, 12 + len(body)) + body


def _gltf_from_glb(glb: bytes) -> bytes:
    """The same asset as a .gltf with its buffer embedded as a data URI."""
    doc, blob = _glb_parts(glb)
    doc["buffers"][0]["uri"] = "data:application/octet-stream;base64," + base64.b64encode(
        blob
    ).decode("ascii")
    return json.dumps(doc).encode()


def _mesh_exports() -> dict[str, bytes]:
    import trimesh

    box = trimesh.creation.box(extents=(1.0, 2.0, 0.5))
    return {
        "box_ascii.ply": box.export(file_type="ply", encoding="ascii"),
        "box_binary.ply": box.export(file_type="ply", encoding="binary"),
        "box_binary.stl": box.export(file_type="stl"),
        "box_ascii.stl": box.export(file_type="stl_ascii").encode(),
    }


def _seeds() -> dict[str, bytes]:
    from data_pipeline.sources.demo_objects import glb_bytes
    from data_pipeline.sources.object_family import member_glb

    mug = glb_bytes("mug")
    seeds = {
        "mug.glb": mug,
        "proc.glb": member_glb("proc-00003"),
        "mug.gltf": _gltf_from_glb(mug),
        "cube.obj": ("mtllib cube.mtl\nusemtl wood\nvt 0 0\nvn 0 0 1\n" + CUBE_OBJ).encode(),
        **_mesh_exports(),
        **{name: make() for name, make in FORMAT_SEEDS.items()},
    }
    shared = Path(os.environ.get("IMAGEDREAM_ASSETS", Path(__file__).parents[3] / "shared/assets"))
    for folder in ("meshes", "broken"):
        for path in sorted((shared / folder).glob("*")) if (shared / folder).is_dir() else []:
            if path.is_file() and path.stat().st_size <= MAX_SEED_BYTES:
                seeds[f"real-{path.name}"] = path.read_bytes()
    return seeds


SEEDS = _seeds()
EXTENSIONS = list(OBJECT_EXTENSIONS)


@pytest.fixture(scope="module")
def asset_dir(tmp_path_factory) -> Path:
    """One folder for every example (each writes its own file); the OBJ's .mtl lives here."""
    folder = tmp_path_factory.mktemp("fuzz_assets")
    (folder / "cube.mtl").write_text("newmtl wood\nmap_Kd -s 1 1 1 wood.png\n")
    inspect_asset(_write(folder, "warm.glb", SEEDS["mug.glb"]))  # imports outside the deadline
    return folder


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = Path(tempfile.mkdtemp(dir=folder)) / name
    path.write_bytes(data)
    if name.endswith(".obj"):
        shutil.copy(folder / "cube.mtl", path.parent / "cube.mtl")
    return path


def _inspect(folder: Path, name: str, data: bytes) -> None:
    path = _write(folder, name, data)
    try:
        inspect_asset(path)
    except Refusal as refusal:
        assert refusal.path == str(path) and refusal.detail
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)


# ----------------------------------------------------------------------------- asset targets


@FUZZ
@given(ext=st.sampled_from(EXTENSIONS), data=st.binary(max_size=2048))
def test_random_bytes_are_refused_not_crashed_on(asset_dir, ext, data):
    _inspect(asset_dir, f"random{ext}", data)


@FUZZ
@given(name=st.sampled_from(sorted(SEEDS)), edits=EDITS)
def test_mutated_assets_are_refused_or_pass(asset_dir, name, edits):
    _inspect(asset_dir, name.removeprefix("real-"), mutate(SEEDS[name], edits))


GLTF_DOCS = {name: _glb_parts(SEEDS[name]) for name in ("mug.glb", "proc.glb")}


@FUZZ
@given(name=st.sampled_from(sorted(GLTF_DOCS)), binary=st.booleans(), data=st.data())
def test_gltf_documents_with_mutated_fields_are_refused_or_pass(asset_dir, name, binary, data):
    """Valid containers around a document whose fields have the wrong type, size or value."""
    doc, blob = GLTF_DOCS[name]
    mutant = data.draw(mutated_json(doc), label="document")
    if binary:
        _inspect(asset_dir, "doc.glb", _glb(mutant, blob))
    else:
        _inspect(asset_dir, "doc.gltf", json.dumps(mutant).encode())


# ----------------------------------------------------------------------------- shard targets


@pytest.fixture(scope="module")
def shard(tmp_path_factory) -> Path:
    """A real two-ring shard with its manifest, in a folder with its index."""
    folder = tmp_path_factory.mktemp("fuzz_shards")
    rings = [encode_sample(*fake_ring(f"fz{i}", num_views=4, seed=i)) for i in range(2)]
    manifest = write_shard(folder / "shard-00000.tar", rings)
    write_index(folder, [manifest])
    list(read_rings(folder / "shard-00000.tar"))  # webdataset's import outside the deadline
    return folder / "shard-00000.tar"


SAMPLE = encode_sample(*fake_ring("fz", num_views=4, seed=3))
META = json.loads(SAMPLE["meta.json"])


def _copy_shard(shard: Path, tar: bytes | None = None, manifest: bytes | None = None) -> Path:
    folder = Path(tempfile.mkdtemp(dir=shard.parent.parent))
    target = folder / shard.name
    target.write_bytes(shard.read_bytes() if tar is None else tar)
    mpath = Path(manifest_path_for(str(shard)))
    Path(manifest_path_for(str(target))).write_bytes(
        mpath.read_bytes() if manifest is None else manifest
    )
    return target


@FUZZ
@given(data=st.data())
def test_samples_with_mutated_members_are_schema_errors_or_decode(data):
    sample = dict(SAMPLE)
    what = data.draw(st.sampled_from(["meta", "png", "members"]), label="what")
    if what == "meta":
        sample["meta.json"] = json.dumps(data.draw(mutated_json(META), label="meta")).encode()
    elif what == "png":
        view = data.draw(st.sampled_from([f"view{i:03d}.png" for i in range(4)]), label="view")
        sample[view] = mutate(SAMPLE[view], data.draw(EDITS, label="png edits"))
    else:
        for name in data.draw(st.lists(st.sampled_from(sorted(SAMPLE)), max_size=3)):
            sample.pop(name, None)
        extra = data.draw(st.dictionaries(st.text(max_size=12), st.binary(max_size=32), max_size=2))
        sample.update(extra)
    views = data.draw(st.none() | st.lists(st.integers(-2, 6), max_size=4), label="views")
    try:
        record = decode_sample(sample, views)
    except SchemaError:
        return
    # what decodes is a well-formed ring: one uint8 RGBA image and one camera per view asked for
    n = len(record.meta.azimuths_deg) if views is None else len(views)
    assert record.images.dtype == np.uint8 and record.images.shape[0] == n
    assert record.images.shape[-1] == 4 and record.c2w.shape == (n, 4, 4)


@FUZZ
@given(edits=EDITS)
def test_mutated_shards_are_schema_errors_or_read(shard, edits):
    tar = mutate(shard.read_bytes(), edits)
    mutant = _copy_shard(shard, tar=tar)
    try:
        try:
            list(read_rings(str(mutant)))
        except SchemaError as exc:
            assert mutant.name in str(exc)
        with contextlib.suppress(SchemaError):
            read_tar_samples(mutant)  # how the job reads staged objects back
        if tar != shard.read_bytes():
            with pytest.raises(SchemaError, match=r"shard-00000.tar"):
                verify_shard(mutant)  # any change of the bytes is caught by the manifest
    finally:
        shutil.rmtree(mutant.parent, ignore_errors=True)


@FUZZ
@given(data=st.data())
def test_mutated_manifests_are_schema_errors(shard, data):
    raw = Path(manifest_path_for(str(shard))).read_bytes()
    if data.draw(st.booleans(), label="structured"):
        doc = data.draw(mutated_json(json.loads(raw)), label="manifest")
        manifest = json.dumps(doc).encode()
    else:
        manifest = mutate(raw, data.draw(EDITS, label="edits"))
    mutant = _copy_shard(shard, manifest=manifest)
    try:
        assert verify_shard(mutant) == ShardManifest.from_json(manifest)
    except SchemaError:
        pass
    finally:
        shutil.rmtree(mutant.parent, ignore_errors=True)


@FUZZ
@given(data=st.data())
def test_mutated_indexes_are_refused_or_read(shard, data):
    raw = (shard.parent / INDEX_FILE).read_bytes()
    if data.draw(st.booleans(), label="structured"):
        index = json.dumps(data.draw(mutated_json(json.loads(raw)), label="index")).encode()
    else:
        index = mutate(raw, data.draw(EDITS, label="edits"))
    mutant = _copy_shard(shard)
    (mutant.parent / INDEX_FILE).write_bytes(index)
    try:
        read_index(mutant.parent)
        assert list_shards(mutant.parent) == [str(mutant)]
    except SchemaError:  # IncompleteDatasetError among them
        pass
    finally:
        shutil.rmtree(mutant.parent, ignore_errors=True)
