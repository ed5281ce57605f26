"""The shard schema through the real writer and reader: round trip, version and PNG checks."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest

from contract.schema import (
    SCHEMA_VERSION,
    SchemaError,
    decode_png,
    decode_sample,
    encode_png,
    encode_sample,
)
from contract.shard_reader import read_rings
from contract.shard_writer import read_tar_samples, write_shard
from tests.data_pipeline.fakes import fake_ring


def test_round_trip_through_writer_and_reader(tmp_path):
    rings = [fake_ring("obj-a", r, seed=r) for r in range(2)]
    rings.append(fake_ring("obj_b", 0, seed=7))
    shard = tmp_path / "shard-00000.tar"
    write_shard(shard, [encode_sample(m, v) for m, v in rings])

    records = list(read_rings(str(shard)))
    assert [r.key for r in records] == ["obj-a_r0", "obj-a_r1", "obj_b_r0"]
    for rec, (meta, views) in zip(records, rings, strict=True):
        assert rec.meta == meta
        assert rec.images.shape == (8, 16, 16, 4) and rec.images.dtype == np.uint8
        np.testing.assert_array_equal(
            rec.images[3], decode_sample(encode_sample(meta, views)).images[3]
        )
        np.testing.assert_allclose(rec.c2w, np.asarray(meta.c2w))

    subset = next(read_rings(str(shard), views=[0, 2, 4, 6]))
    assert subset.views == [0, 2, 4, 6] and subset.images.shape[0] == 4
    np.testing.assert_allclose(subset.azimuths_deg, [0, 90, 180, 270])
    assert subset.num_views == 8


def test_other_schema_version_is_refused_with_clear_error(tmp_path):
    meta, views = fake_ring("old")
    sample = encode_sample(meta, views)
    data = json.loads(sample["meta.json"])
    data["schema_version"] = "imagedream-ring/0"
    sample["meta.json"] = json.dumps(data).encode()
    shard = tmp_path / "shard-00000.tar"
    write_shard_unchecked(shard, [sample])
    with pytest.raises(SchemaError, match=r"shard-00000\.tar.*old_r0.*schema_version"):
        list(read_rings(str(shard)))


def test_bad_png_names_the_key_and_view(tmp_path):
    meta, views = fake_ring("broken-png")
    views[5] = views[5][: len(views[5]) // 2]  # truncated PNG
    shard = tmp_path / "shard-00000.tar"
    write_shard(shard, [encode_sample(meta, views)])
    with pytest.raises(SchemaError, match=r"broken-png_r0: view 5 is not a decodable PNG"):
        list(read_rings(str(shard)))
    # only the requested views are decoded, and the good ones are fine
    assert next(read_rings(str(shard), views=[0, 4])).images.shape[0] == 2


def test_missing_view_is_refused(tmp_path):
    meta, views = fake_ring("short")
    sample = encode_sample(meta, views)
    del sample["view007.png"]
    with pytest.raises(SchemaError, match="short_r0: views"):
        decode_sample(sample)


def test_sample_keys_never_contain_dots():
    meta, views = fake_ring("ok")
    meta.uid = "has.dot"
    with pytest.raises(SchemaError, match="no dots"):
        encode_sample(meta, views)


def test_staged_tar_reads_back_bytes_exactly(tmp_path):
    meta, views = fake_ring("exact")
    sample = encode_sample(meta, views)
    write_shard(tmp_path / "s.tar", [sample])
    (back,) = read_tar_samples(tmp_path / "s.tar")
    assert back == sample
    assert json.loads(back["meta.json"])["schema_version"] == SCHEMA_VERSION


def write_shard_unchecked(path, samples):
    """A tar with samples the writer would refuse (for reader tests), via plain tarfile."""
    with tarfile.open(path, "w") as tar:
        for sample in samples:
            for name, data in sample.items():
                if not name.startswith("__"):
                    info = tarfile.TarInfo(f"{sample['__key__']}.{name}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


def test_writer_refuses_samples_that_break_the_schema(tmp_path):
    meta, views = fake_ring("old")
    sample = encode_sample(meta, views)
    sample["meta.json"] = sample["meta.json"].replace(SCHEMA_VERSION.encode(), b"other/9")
    with pytest.raises(SchemaError, match=r"shard-00000.tar: sample old_r0: schema_version"):
        write_shard(tmp_path / "shard-00000.tar", [sample])
    assert list(tmp_path.iterdir()) == []  # nothing half-written is left behind


def test_meta_without_notes_from_older_shards_reads_as_no_notes():
    meta, views = fake_ring("older")
    sample = encode_sample(meta, views)
    data = json.loads(sample["meta.json"])
    del data["notes"]  # what every shard written before notes existed holds
    sample["meta.json"] = json.dumps(data).encode()
    assert decode_sample(sample, views=[0]).meta.notes == []
    meta.notes = ["texture 'a.png' is missing"]
    assert decode_sample(encode_sample(meta, views), views=[0]).meta.notes == meta.notes


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("azimuths_deg", 5, "azimuths_deg is int"),
        ("c2w", [[1.0]], "c2w has shape"),
        ("c2w", [[["a"] * 4] * 4] * 8, "c2w is not"),
        ("border_fraction", [0.0], "1 border fractions for 8 views"),
        ("notes", "missing texture", "notes is str"),
    ],
)
def test_meta_fields_of_the_wrong_type_or_shape_are_schema_errors(field, value, message):
    meta, views = fake_ring("typed")
    sample = encode_sample(meta, views)
    data = json.loads(sample["meta.json"])
    data[field] = value
    sample["meta.json"] = json.dumps(data).encode()
    with pytest.raises(SchemaError, match=f"typed_r0: .*{message}"):
        decode_sample(sample)


def test_meta_that_is_not_a_json_object_is_a_schema_error():
    meta, views = fake_ring("list")
    sample = encode_sample(meta, views)
    sample["meta.json"] = b"[1, 2]"
    with pytest.raises(SchemaError, match=r"list_r0: meta.json is not a JSON object"):
        decode_sample(sample)


def test_a_view_of_another_size_than_the_metadata_says_is_refused():
    meta, views = fake_ring("sizes", resolution=16)
    views[3] = encode_png(np.zeros((8, 8, 4), dtype=np.uint8))
    with pytest.raises(SchemaError, match="sizes_r0: view 3 is 8x8 px, metadata says 16x16"):
        decode_sample(encode_sample(meta, views))


def _pil_decode(png: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as img:
        return np.asarray(img.convert("RGBA")).copy()


def test_views_decode_in_place_into_the_rings_array_with_the_encoded_pixels(monkeypatch):
    """decode_sample writes each PNG straight into one (V, H, W, 4) array (no per-view array,
    no stack, no copy): the pixels must be PIL's own decode of the same bytes, view by view."""
    import contract.schema as schema

    def no_copy(*args, **kwargs):
        raise AssertionError("decoded into PIL's memory and copied, not in place")

    meta, views = fake_ring("in-place", num_views=8, resolution=24, seed=3)
    monkeypatch.setattr(schema.np, "copyto", no_copy)
    rec = decode_sample(encode_sample(meta, views), views=[6, 1, 3])
    monkeypatch.undo()
    assert rec.images.shape == (3, 24, 24, 4) and rec.images.flags.c_contiguous
    for row, v in enumerate([6, 1, 3]):
        np.testing.assert_array_equal(rec.images[row], _pil_decode(views[v]))
    assert len({_pil_decode(views[v]).tobytes() for v in (6, 1, 3)}) == 3  # distinct views


def test_decoding_into_an_array_of_the_wrong_shape_is_refused():
    _, views = fake_ring("wrong-out", resolution=16)
    with pytest.raises(ValueError, match="out must be"):
        decode_png(views[0], "k", 0, 16, out=np.empty((16, 16, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="out must be"):
        decode_png(views[0], "k", 0, 16, out=np.empty((32, 16, 4), dtype=np.uint8)[::2])
    with pytest.raises(ValueError, match="out must be a writeable"):
        decode_png(
            views[0], "k", 0, 16, out=np.frombuffer(bytes(16 * 16 * 4), np.uint8).reshape(16, 16, 4)
        )
    with pytest.raises(SchemaError, match="view 0 is 16x16 px, the array for it 8x8"):
        decode_png(views[0], "k", 0, None, out=np.empty((8, 8, 4), dtype=np.uint8))


def test_decoding_into_still_fills_the_array_when_pil_allocates_its_own_memory(monkeypatch):
    """Should a Pillow version ignore the image memory it is given, the pixels are copied."""
    from PIL import Image, ImageFile

    def allocate(self):
        self.im = Image.core.new(self.mode, self.size)

    monkeypatch.setattr(ImageFile.ImageFile, "load_prepare", allocate)
    _, views = fake_ring("fallback", resolution=16, seed=5)
    out = np.zeros((16, 16, 4), dtype=np.uint8)
    assert decode_png(views[2], "k", 2, 16, out=out) is out
    np.testing.assert_array_equal(out, _pil_decode(views[2]))
