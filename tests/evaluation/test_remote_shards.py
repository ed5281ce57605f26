"""Evaluation's shard readers on a dataset in object storage (a local S3 server): the leakage
index from the remote manifests, held-out rings from the remote folder."""

from __future__ import annotations

import numpy as np

from contract.cameras import CANONICAL_AZIMUTHS_DEG
from contract.synthetic_shards import write_synthetic_shards
from evaluation.leakage import TrainingIndex
from evaluation.prompts import PromptConfig, load_heldout_rings


def test_leakage_index_and_heldout_rings_from_s3(tmp_path, s3):
    local = tmp_path / "out" / "shards"
    write_synthetic_shards(local, num_shards=2, rings_per_shard=3, num_views=8, resolution=32)
    url = s3.upload(tmp_path / "out", "out")
    remote = TrainingIndex.from_shards([url])
    assert remote == TrainingIndex.from_shards([tmp_path / "out"]) and remote.shards == 2
    braces = TrainingIndex.from_shards([f"{url}/shards/shard-{{00000..00001}}.tar"])
    assert braces == remote

    cfg = PromptConfig(size=32)
    got = load_heldout_rings(url, cfg, CANONICAL_AZIMUTHS_DEG)
    expected = load_heldout_rings(str(local), cfg, CANONICAL_AZIMUTHS_DEG)
    assert [p.name for p in got] == [p.name for p in expected] and len(got) == 6
    for a, b in zip(got, expected, strict=True):
        assert (a.uid, a.text) == (b.uid, b.text)
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.gt_views, b.gt_views)
