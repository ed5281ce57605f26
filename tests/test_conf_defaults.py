"""Each fact written once: the typed dataclasses own every default, and a YAML file in conf/ only
sets what differs. A YAML value is redundant when its key composes to the same value without it
(for a plain group file that is the dataclass default; for a preset, the default or the value of
the group file it selects). Every YAML file is checked by real Hydra composition: once as it is,
once with its values removed (its defaults list kept)."""

from __future__ import annotations

import fnmatch
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from omegaconf import OmegaConf

from contract.hydra_compose import CONF_DIR, compose
from data_pipeline.job.config import register_configs as register_render_configs
from evaluation.config import register_configs as register_eval_configs
from training.config import register_configs as register_train_configs

# the primary config that each group belongs to
GROUP_PRIMARY = {
    "controller": "train",
    "data": "train",
    "debug": "train",
    "engine": "train",
    "experiment": "train",
    "model": "train",
    "trainer": "train",
    "eval_experiment": "eval",
    "metrics": "eval",
    "render": "render",
    "source": "render",
}
PRIMARIES = ("train", "eval", "render")

# Lines that restate a default on purpose: (file pattern, key) -> why.
ALLOWED = {
    # A paper preset is the recipe of a published result (SPEC 5): it keeps the paper's values
    # even if the code defaults change (e.g. a shorter default run while developing).
    ("experiment/imagedream_global.yaml", "engine.lr"): "paper recipe (SPEC 5)",
    ("experiment/imagedream_local.yaml", "engine.lr"): "paper recipe (SPEC 5)",
    ("experiment/imagedream_*.yaml", "data.prompt_dropout"): "paper recipe (SPEC 5)",
    ("experiment/imagedream_*.yaml", "trainer.max_steps"): "paper recipe (SPEC 5)",
    ("experiment/mvdream.yaml", "trainer.max_steps"): "the paper variants' schedule",
}
MANDATORY = "???"  # `key: ???` documents a value the user must give: Hydra needs it, kept


def yaml_files(conf: Path) -> list[str]:
    return sorted(p.relative_to(conf).as_posix() for p in conf.rglob("*.yaml"))


def leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value of every leaf (lists are leaves) of a plain YAML mapping."""
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def lookup(node: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return object()  # absent: a fresh sentinel, equal to nothing
        node = node[part]
    return node


def redundant_keys(conf: Path, rel: str) -> list[str]:
    """Keys of conf/<rel> whose value composes the same with the file's values removed."""
    path = conf / rel
    text = path.read_text()
    raw = yaml.safe_load(text) or {}
    if rel.removesuffix(".yaml") in PRIMARIES:
        name, overrides, prefix = rel.removesuffix(".yaml"), [], ""
    else:
        group, stem = rel.removesuffix(".yaml").split("/")
        name, overrides = GROUP_PRIMARY[group], [f"{group}={stem}"]
        package = [line for line in text.splitlines() if line.startswith("# @package")]
        assert package in ([], ["# @package _global_"]), f"{rel}: unhandled {package}"
        prefix = "" if package else f"{group}."
    own = {k: v for k, v in raw.items() if k not in ("defaults", "hydra")}
    keys = [f"{prefix}{key}" for key, value in leaves(own).items() if value != MANDATORY]
    actual = OmegaConf.to_container(compose(name, overrides, config_dir=conf), resolve=False)
    stripped = "".join(line + "\n" for line in text.splitlines() if line.startswith("# @package"))
    if "defaults" in raw:
        stripped += yaml.safe_dump({"defaults": raw["defaults"]})
    try:
        path.write_text(stripped)
        without = OmegaConf.to_container(compose(name, overrides, config_dir=conf), resolve=False)
    finally:
        path.write_text(text)
    return [key for key in keys if lookup(actual, key) == lookup(without, key)]


def allowed(rel: str, key: str) -> bool:
    return any(fnmatch.fnmatch(rel, pattern) and key == k for pattern, k in ALLOWED)


@pytest.fixture(scope="module")
def conf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    register_render_configs()
    register_train_configs()
    register_eval_configs()
    copy = tmp_path_factory.mktemp("conf") / "conf"
    shutil.copytree(CONF_DIR, copy)
    return copy


def test_every_group_is_checked() -> None:
    groups = {p.name for p in CONF_DIR.iterdir() if p.is_dir()}
    assert groups == set(GROUP_PRIMARY)
    assert {p.stem for p in CONF_DIR.glob("*.yaml")} == set(PRIMARIES)


@pytest.mark.parametrize("rel", yaml_files(CONF_DIR))
def test_yaml_sets_only_what_differs_from_the_defaults(conf: Path, rel: str) -> None:
    restated = [key for key in redundant_keys(conf, rel) if not allowed(rel, key)]
    assert not restated, (
        f"conf/{rel} restates the default of {restated}: the dataclass owns it, delete the line "
        "(or list it in ALLOWED with the reason it must be pinned)"
    )


def test_the_check_catches_a_restated_default(conf: Path) -> None:
    from training.config import TrainerConfig

    path = conf / "trainer" / "default.yaml"
    text = path.read_text()
    try:
        path.write_text(f"{text}sample_every: {TrainerConfig().sample_every}\nseed: 7\n")
        assert redundant_keys(conf, "trainer/default.yaml") == ["trainer.sample_every"]
    finally:
        path.write_text(text)


def test_every_allowed_line_still_exists(conf: Path) -> None:
    for pattern, key in ALLOWED:
        matches = [rel for rel in yaml_files(conf) if fnmatch.fnmatch(rel, pattern)]
        assert matches, f"ALLOWED names no file: {pattern}"
        for rel in matches:
            assert key in redundant_keys(conf, rel), f"conf/{rel}: ALLOWED {key} is stale"
