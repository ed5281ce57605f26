"""A procedural family of built-in objects: any number of seeded, distinct, asymmetric GLBs.

`source=builtin source.count=N` renders the first N members (`proc-00000`, `proc-00001`, ...).
Each member is a body (box or cylinder of random proportions) with parts that make its four
sides differ, every part in its own colour: a flat marker on the front (-Y, the azimuth-0 view),
a block on the back, an arm on its left (-X), a patch on its right and a cap on top, off centre.
Everything is drawn from an RNG seeded by the member's name, so the same name gives the same
bytes on every run, and the caption names the parts and colours.

The train / held-out split is a function of the name alone (`split_of`: sha1 of the name), so a
held-out member is never rendered into a training set and no evaluation on it is a leak. The
name is the file stem, from which the local source derives the uid.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from data_pipeline.sources.demo_objects import Palette, Part, mesh_from_parts, mesh_glb

PREFIX = "proc"
SPLITS = ("all", "train", "heldout")
HELDOUT_FRACTION = 0.1

# Named colours (sRGB) a member draws its parts' colours from, all different within a member.
COLOURS: Palette = {
    "red": (210, 40, 35),
    "orange": (240, 130, 25),
    "yellow": (245, 215, 40),
    "lime": (150, 220, 40),
    "green": (30, 150, 60),
    "teal": (20, 160, 150),
    "cyan": (70, 210, 235),
    "blue": (30, 70, 210),
    "navy": (20, 30, 100),
    "purple": (120, 50, 170),
    "magenta": (215, 40, 190),
    "pink": (245, 160, 190),
    "brown": (120, 75, 35),
    "white": (240, 240, 235),
    "grey": (120, 120, 120),
    "black": (20, 20, 20),
}


def member_name(index: int) -> str:
    return f"{PREFIX}-{index:05d}"


def _digest(name: str) -> int:
    return int(hashlib.sha1(name.encode()).hexdigest()[:15], 16)


def split_of(name: str, heldout_fraction: float = HELDOUT_FRACTION) -> str:
    """ "heldout" for about `heldout_fraction` of the names, "train" for the rest."""
    return "heldout" if (_digest(name) % 10_000) < heldout_fraction * 10_000 else "train"


def member(name: str) -> tuple[str, list[Part], Palette]:
    """(caption, parts in Blender's frame, palette) of one family member."""
    rng = np.random.default_rng(_digest(name))
    names = list(COLOURS)
    body_c, front_c, back_c, left_c, right_c, top_c = (
        names[i] for i in rng.choice(len(names), size=6, replace=False)
    )
    w, d, h = rng.uniform(0.45, 0.8), rng.uniform(0.35, 0.6), rng.uniform(0.4, 0.8)
    cylinder = bool(rng.random() < 0.4)
    if cylinder:
        r = min(w, d) / 2
        w = d = 2 * r
        body = Part("cylinder", (0.0, 0.0, h / 2), (r, r, h), body_c)
    else:
        body = Part("box", (0.0, 0.0, h / 2), (w, d, h), body_c)
    mark_h = rng.uniform(0.25, 0.75) * h
    mark = rng.uniform(0.35, 0.6) * min(w, h)
    parts = [
        body,
        # front: a flat square marker on the -Y face
        Part("box", (0.0, -d / 2 - 0.015, mark_h), (mark, 0.03, mark), front_c),
        # back: a block standing out of the +Y face
        Part(
            "box",
            (0.0, d / 2 + 0.08, rng.uniform(0.3, 0.6) * h),
            (0.7 * w, 0.16, 0.45 * h),
            back_c,
        ),
        # left (-X): an arm
        Part("box", (-w / 2 - 0.12, 0.0, 0.6 * h), (0.24, 0.1, 0.1), left_c),
        # right (+X): a flat patch, low
        Part("box", (w / 2 + 0.015, 0.0, 0.3 * h), (0.03, 0.5 * d, 0.25 * h), right_c),
        # top: a cap, towards the back left
        Part(
            "cylinder" if rng.random() < 0.5 else "box",
            (-0.2 * w, 0.15 * d, h + 0.06),
            (0.12, 0.12, 0.12) if cylinder else (0.2, 0.2, 0.12),
            top_c,
        ),
    ]
    shape = "cylinder" if cylinder else "block"
    caption = (
        f"a {body_c} {shape} with a {front_c} square on the front, a {back_c} block at the back, "
        f"a {left_c} arm on its left side, a {right_c} patch on its right side and a {top_c} cap"
    )
    palette = {c: COLOURS[c] for c in (body_c, front_c, back_c, left_c, right_c, top_c)}
    return caption, parts, palette


def member_glb(name: str) -> bytes:
    _, parts, palette = member(name)
    return mesh_glb(name, mesh_from_parts(name, parts, palette, frame="gltf"))


def member_names(
    count: int, split: str = "all", heldout_fraction: float = HELDOUT_FRACTION
) -> list[str]:
    """The members among the first `count` names that belong to `split`."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    names = [member_name(i) for i in range(count)]
    return [n for n in names if split == "all" or split_of(n, heldout_fraction) == split]


def write_family(
    directory: str | Path,
    count: int,
    split: str = "all",
    heldout_fraction: float = HELDOUT_FRACTION,
) -> list[Path]:
    """Write `<name>.glb` and its caption `<name>.txt` for each member of the split."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in member_names(count, split, heldout_fraction):
        caption, _, _ = member(name)
        path = directory / f"{name}.glb"
        path.write_bytes(member_glb(name))
        (directory / f"{name}.txt").write_text(caption + "\n", encoding="utf-8")
        written.append(path)
    return written
