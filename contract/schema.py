"""The shard format: one owner for keys, encodings, camera convention and schema version.

The writer (`contract.shard_writer`) and every reader (`contract.shard_reader`, training, evaluation)
import this module; nobody else spells a member name or a metadata field.

A WebDataset sample is one ring of one object:
    {key}.meta.json      RingMeta as JSON (cameras, settings, provenance; see RingMeta)
    {key}.view{i:03d}.png  RGBA, straight alpha, 8 bit, one per view, i = 0..V-1
Keys are "{uid}_r{ring}" with uid restricted to [A-Za-z0-9_-]: WebDataset splits member names at
the first dot, so a dot in a key would corrupt the sample.

Shapes: V views, H, W pixels.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from contract.cameras import CONVENTION

SCHEMA_VERSION = "imagedream-ring/1"
SUPPORTED_VERSIONS = frozenset({SCHEMA_VERSION})


def is_supported_version(value: object) -> bool:
    """True for a schema_version this reader knows (any JSON value may come in)."""
    return isinstance(value, str) and value in SUPPORTED_VERSIONS


META_EXT = "meta.json"
VIEW_EXT = "view{index:03d}.png"
_VIEW_RE = re.compile(r"^view(\d{3})\.png$")
_UID_RE = re.compile(r"^[A-Za-z0-9_-]{1,200}$")

MANIFEST_SUFFIX = ".manifest.json"


class SchemaError(ValueError):
    """A sample or manifest does not follow this schema (names the key and the reason)."""


class IncompleteDatasetError(SchemaError):
    """A shard folder without a complete dataset index (contract.dataset_index): a render
    job was killed while rewriting it, or its files no longer match the index."""


def validate_uid(uid: str) -> str:
    if not _UID_RE.match(uid):
        raise SchemaError(
            f"uid {uid!r} must match [A-Za-z0-9_-]{{1,200}} (no dots: WebDataset keys)"
        )
    return uid


def sample_key(uid: str, ring: int) -> str:
    return f"{validate_uid(uid)}_r{ring}"


def split_member(name: str) -> tuple[str, str]:
    """(key, extension) of a tar member name, split at the first dot as WebDataset does."""
    key, _, ext = name.partition(".")
    return key, ext


def view_index(ext: str) -> int | None:
    """The view index of a member extension ("view007.png" -> 7); None for any other member."""
    match = _VIEW_RE.match(ext)
    return int(match.group(1)) if match else None


@dataclass
class RingMeta:
    """Everything about a ring except its pixels. Angles in degrees, lengths in object units."""

    uid: str
    ring: int
    caption: str
    source: str  # e.g. "local", "objaverse"
    asset_path: str  # where the asset came from (path or URL), for humans
    asset_sha256: str
    elevation_deg: float
    fov_deg: float
    distance: float
    azimuths_deg: list[float]  # (V,)
    c2w: list[list[list[float]]]  # (V, 4, 4) camera-to-world, see contract.cameras
    border_fraction: list[float]  # (V,) fraction of the image border covered by the object
    resolution: int
    lights: dict[str, Any] = field(default_factory=dict)
    render: dict[str, Any] = field(default_factory=dict)  # engine, samples, seed, blender, ...
    # What was wrong with the asset but did not stop it rendering, e.g. a missing texture
    # (data_pipeline.formats.mesh_inspection.AssetReport.notes). Absent in older shards: read as [].
    notes: list[str] = field(default_factory=list)
    schema_version: str = SCHEMA_VERSION
    camera_convention: str = CONVENTION

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes, key: str = "?") -> RingMeta:
        data = load_json_object(raw, f"sample {key}: {META_EXT}")
        version = data.get("schema_version")
        if not is_supported_version(version):
            raise SchemaError(
                f"sample {key}: schema_version {version!r} is not supported "
                f"(this reader knows {sorted(SUPPORTED_VERSIONS)})"
            )
        if data.get("camera_convention") != CONVENTION:
            raise SchemaError(
                f"sample {key}: camera_convention {data.get('camera_convention')!r} != {CONVENTION}"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        missing = names - data.keys() - _OPTIONAL_META
        if missing:
            raise SchemaError(f"sample {key}: {META_EXT} lacks fields {sorted(missing)}")
        for name, kind in _META_TYPES.items():
            if name in data and not _is(data[name], kind):
                raise SchemaError(
                    f"sample {key}: {META_EXT} field {name} is {type(data[name]).__name__}, "
                    f"expected {kind}"
                )
        meta = cls(**{k: v for k, v in data.items() if k in names})
        _check_ring_shapes(meta, key)
        return meta


# Fields a reader may find absent (older shards): they take their defaults.
_OPTIONAL_META = frozenset({"lights", "render", "notes"})
# JSON type of every field; "number" is int or float (not bool), "numbers" a list of them.
_META_TYPES = {
    "uid": "str", "ring": "int", "caption": "str", "source": "str", "asset_path": "str",
    "asset_sha256": "str", "elevation_deg": "number", "fov_deg": "number",
    "distance": "number", "azimuths_deg": "numbers", "c2w": "list",
    "border_fraction": "numbers", "resolution": "int", "lights": "dict", "render": "dict",
    "notes": "strs",
}  # fmt: skip


def _is(value: Any, kind: str) -> bool:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "number":
        return number
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "numbers":
        return isinstance(value, list) and all(_is(v, "number") for v in value)
    if kind == "strs":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return isinstance(value, {"str": str, "list": list, "dict": dict}[kind])


def _check_ring_shapes(meta: RingMeta, key: str) -> None:
    """Poses (V, 4, 4), border fractions (V,) and a positive resolution, V = len(azimuths)."""
    num_views = len(meta.azimuths_deg)
    try:
        c2w = np.asarray(meta.c2w, dtype=np.float64)
    except (TypeError, ValueError) as exc:  # ragged or non-numeric nested lists
        raise SchemaError(f"sample {key}: c2w is not a (V, 4, 4) array of numbers") from exc
    if c2w.shape != (num_views, 4, 4):
        raise SchemaError(f"sample {key}: c2w has shape {c2w.shape}, expected ({num_views}, 4, 4)")
    if len(meta.border_fraction) != num_views:
        raise SchemaError(
            f"sample {key}: {len(meta.border_fraction)} border fractions for {num_views} views"
        )
    if meta.resolution < 1:
        raise SchemaError(f"sample {key}: resolution {meta.resolution} is not positive")


def load_json_object(raw: bytes, what: str) -> dict[str, Any]:
    """A JSON object, or SchemaError naming `what` (never another exception type)."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise SchemaError(f"{what} is not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise SchemaError(f"{what} is not a JSON object (got {type(data).__name__})")
    return data


@dataclass
class RingRecord:
    """One ring as training and tests see it."""

    key: str
    meta: RingMeta
    images: np.ndarray  # (V, H, W, 4) uint8 RGBA, straight alpha; only `views` if subset decoded
    views: list[int]  # which view indices `images` holds, in order

    @property
    def c2w(self) -> np.ndarray:
        """(V, 4, 4) float64 camera-to-world of the decoded views."""
        return np.asarray(self.meta.c2w, dtype=np.float64)[self.views]

    @property
    def azimuths_deg(self) -> np.ndarray:
        return np.asarray(self.meta.azimuths_deg, dtype=np.float64)[self.views]

    @property
    def num_views(self) -> int:
        """Views in the ring on disk (not only the decoded ones)."""
        return len(self.meta.azimuths_deg)


def encode_png(rgba: np.ndarray) -> bytes:
    if rgba.dtype != np.uint8 or rgba.ndim != 3 or rgba.shape[2] != 4:
        raise SchemaError(f"a view must be (H, W, 4) uint8 RGBA, got {rgba.dtype} {rgba.shape}")
    buf = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode_png(
    raw: bytes,
    key: str,
    index: int,
    resolution: int | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """(H, W, 4) uint8 of one view; with `resolution`, the size is checked from the PNG header
    before any pixel is decoded (a corrupt header cannot make us allocate a huge image).

    With `out` (a C-contiguous (H, W, 4) uint8 array, e.g. one view of a ring's array) the PNG
    is decoded straight into it and `out` is returned: no intermediate image, no copy (PIL's
    decoder writes into a view of `out`, see `_decode_into`)."""
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise SchemaError(f"sample {key}: view {index} is {type(raw).__name__}, not PNG bytes")
    if out is not None and (
        out.ndim != 3
        or out.shape[2] != 4
        or out.dtype != np.uint8
        or not out.flags.c_contiguous
        or not out.flags.writeable
    ):
        raise ValueError(
            f"out must be a writeable (H, W, 4) uint8 C-contiguous array, got {out.dtype} "
            f"{out.shape}"
        )
    try:
        with Image.open(io.BytesIO(raw)) as img:
            if img.format != "PNG":
                raise SchemaError(f"sample {key}: view {index} is {img.format}, expected PNG")
            if resolution is not None and img.size != (resolution, resolution):
                raise SchemaError(
                    f"sample {key}: view {index} is {img.size[0]}x{img.size[1]} px, metadata "
                    f"says {resolution}x{resolution}"
                )
            if img.mode != "RGBA":
                raise SchemaError(f"sample {key}: view {index} is {img.mode}, expected RGBA")
            if out is not None:
                if out.shape[:2] != (img.size[1], img.size[0]):
                    raise SchemaError(
                        f"sample {key}: view {index} is {img.size[0]}x{img.size[1]} px, the "
                        f"array for it {out.shape[1]}x{out.shape[0]}"
                    )
                return _decode_into(img, out)
            img.load()
            return np.asarray(img)
    except SchemaError:
        raise
    except Exception as exc:  # PIL raises many types for corrupt data
        raise SchemaError(f"sample {key}: view {index} is not a decodable PNG ({exc})") from exc


def _decode_into(img: Image.Image, out: np.ndarray) -> np.ndarray:
    """Decode an opened RGBA PNG into `out` (H, W, 4) uint8, C-contiguous, of its size (checked
    by decode_png).

    PIL decodes into the image memory a file image already has (ImageFile.load_prepare only
    allocates when there is none), so giving the image a core image mapped onto `out`
    (Image.core.map_buffer, what Image.frombuffer uses) makes the decoder write our array.
    Pillow is pinned; should a version allocate its own memory anyway, the pixels are copied
    into `out` (same result, one copy more)."""
    mapped = Image.core.map_buffer(out, img.size, "raw", 0, ("RGBA", 0, 1))
    img.im = mapped
    img.load()
    if img.im is not mapped:
        np.copyto(out, np.asarray(img))
    return out


def encode_sample(meta: RingMeta, views_png: Sequence[bytes]) -> dict[str, Any]:
    """WebDataset sample dict (member name -> bytes) for one ring with already-encoded PNGs."""
    key = sample_key(meta.uid, meta.ring)
    if len(views_png) != len(meta.azimuths_deg) or len(meta.c2w) != len(meta.azimuths_deg):
        raise SchemaError(
            f"sample {key}: {len(views_png)} images, {len(meta.c2w)} poses and "
            f"{len(meta.azimuths_deg)} azimuths must agree"
        )
    sample: dict[str, Any] = {"__key__": key, META_EXT: meta.to_json()}
    for i, png in enumerate(views_png):
        sample[VIEW_EXT.format(index=i)] = png
    return sample


def decode_sample(sample: dict[str, Any], views: Sequence[int] | None = None) -> RingRecord:
    """Typed record from a raw WebDataset sample; decodes only `views` when given.

    Raises SchemaError naming the key and the reason; never substitutes data.
    """
    key = str(sample.get("__key__", "?"))
    if META_EXT not in sample:
        raise SchemaError(f"sample {key}: no {META_EXT} member")
    meta = RingMeta.from_json(sample[META_EXT], key)
    num_views = len(meta.azimuths_deg)
    present = sorted(int(m.group(1)) for name in sample if (m := _VIEW_RE.match(name)))
    if present != list(range(num_views)):
        raise SchemaError(f"sample {key}: views {present} on disk, metadata says {num_views}")
    wanted = list(range(num_views)) if views is None else [int(v) for v in views]
    bad = [v for v in wanted if not 0 <= v < num_views]
    if bad:
        raise SchemaError(f"sample {key}: view indices {bad} out of range 0..{num_views - 1}")
    res = meta.resolution
    images = np.empty((len(wanted), res, res, 4), dtype=np.uint8)
    for i, v in enumerate(wanted):  # each view decoded in place: no per-view array, no stack
        decode_png(sample[VIEW_EXT.format(index=v)], key, v, res, out=images[i])
    return RingRecord(key=key, meta=meta, images=images, views=wanted)


@dataclass
class ManifestEntry:
    key: str
    uid: str
    ring: int
    asset_sha256: str
    members: dict[str, dict[str, Any]]  # member name -> {"bytes": int, "sha256": str}


@dataclass
class ShardManifest:
    """Written beside every shard as "<shard>.manifest.json"; lists what the tar holds."""

    shard: str  # file name of the tar
    tar_bytes: int
    tar_sha256: str
    entries: list[ManifestEntry]
    schema_version: str = SCHEMA_VERSION

    @property
    def uids(self) -> set[str]:
        return {e.uid for e in self.entries}

    @property
    def asset_hashes(self) -> set[str]:
        return {e.asset_sha256 for e in self.entries}

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes, name: str = "?") -> ShardManifest:
        data = load_json_object(raw, f"manifest {name}")
        if not is_supported_version(data.get("schema_version")):
            raise SchemaError(
                f"manifest {name}: schema_version {data.get('schema_version')!r} not supported"
            )
        try:
            entries = [ManifestEntry(**e) for e in data.pop("entries")]
            manifest = cls(entries=entries, **data)
        except (KeyError, TypeError) as exc:  # a field missing, unknown or not an object
            raise SchemaError(f"manifest {name}: malformed ({type(exc).__name__}: {exc})") from exc
        if not (
            isinstance(manifest.shard, str)
            and _is(manifest.tar_bytes, "int")
            and isinstance(manifest.tar_sha256, str)
            and all(isinstance(e.uid, str) and isinstance(e.asset_sha256, str) for e in entries)
        ):
            raise SchemaError(f"manifest {name}: malformed (a field has the wrong type)")
        return manifest


def manifest_path_for(shard_path: str) -> str:
    return shard_path + MANIFEST_SUFFIX
