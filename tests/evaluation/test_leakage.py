"""The leakage check catches evaluation objects present in the training shards."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.leakage import LeakageError, TrainingIndex, check_leakage, find_leaks
from evaluation.prompts import EvalPrompt
from tests.evaluation.helpers import write_ring_shard

SHA_A, SHA_B, SHA_C = "a" * 64, "b" * 64, "c" * 64


def _prompt(name: str, uid: str | None, sha: str | None) -> EvalPrompt:
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    return EvalPrompt(name=name, image=image, text=None, source=name, uid=uid, asset_sha256=sha)


@pytest.fixture
def train_dir(tmp_path):
    out = tmp_path / "train" / "shards"
    write_ring_shard(out / "shard-00000.tar", ["chair", "mug"], [SHA_A, SHA_B])
    write_ring_shard(out / "shard-00001.tar", ["robot"], [SHA_C])
    return out.parent


def test_index_reads_every_manifest(train_dir) -> None:
    index = TrainingIndex.from_shards([train_dir])
    assert index.uids == {"chair", "mug", "robot"}
    assert index.asset_hashes == {SHA_A, SHA_B, SHA_C}
    assert index.shards == 2
    pattern = TrainingIndex.from_shards([str(train_dir / "shards" / "shard-{00000..00001}.tar")])
    assert pattern.uids == index.uids


def test_catches_by_uid_and_by_hash(train_dir) -> None:
    prompts = [
        _prompt("same_uid", "mug", "d" * 64),  # same object id, different file
        _prompt("same_asset", "mug_copy", SHA_C),  # same asset under another uid
        _prompt("both", "chair", SHA_A),
        _prompt("clean", "lamp", "e" * 64),
        _prompt("plain_image", None, None),
    ]
    leaks, unchecked = find_leaks(prompts, TrainingIndex.from_shards([train_dir]))
    by = {leak.prompt: leak.by for leak in leaks}
    assert by == {
        "same_uid": ["uid"],
        "same_asset": ["asset_sha256"],
        "both": ["uid", "asset_sha256"],
    }
    assert unchecked == ["plain_image"]


def test_refuse_raises_and_flag_reports(train_dir) -> None:
    prompts = [_prompt("leaky", "robot", None), _prompt("clean", "lamp", None)]
    with pytest.raises(LeakageError, match=r"leaky .by uid"):
        check_leakage(prompts, [train_dir], "refuse")
    report = check_leakage(prompts, [train_dir], "flag")
    assert [leak.prompt for leak in report.leaks] == ["leaky"] and report.checked == 2
    assert check_leakage(prompts[1:], [train_dir], "refuse").leaks == []
    assert check_leakage(prompts, [], "refuse").mode == "off"  # nothing to check against
    with pytest.raises(ValueError, match=r"leakage.mode"):
        check_leakage(prompts, [train_dir], "warn")


def test_a_shard_without_manifest_is_an_error(train_dir) -> None:
    (train_dir / "shards" / "shard-00001.tar.manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="no manifest"):
        TrainingIndex.from_shards([train_dir])
