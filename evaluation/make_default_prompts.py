"""Draw the shipped default prompt set (evaluation/default_prompts/) deterministically.

    python -m evaluation.make_default_prompts [--out evaluation/default_prompts]

Four simple objects on a transparent background, drawn with PIL at 4x and downsampled (no
randomness, no external data), each with a caption file. They exercise the whole preprocessing
path (alpha -> re-centred, composited on the model's grey) and give the built-in example something to look at; they
are not a benchmark: use the paper's 39 prompts for that (docs/EVALUATION.md).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 128
SCALE = 4  # supersampling factor for anti-aliased edges

Drawer = Callable[[ImageDraw.ImageDraw, int], None]


def _mug(d: ImageDraw.ImageDraw, s: int) -> None:
    d.ellipse(
        [0.62 * s, 0.36 * s, 0.86 * s, 0.66 * s], outline=(170, 30, 30, 255), width=int(0.06 * s)
    )
    d.rounded_rectangle(
        [0.2 * s, 0.28 * s, 0.68 * s, 0.78 * s], radius=int(0.05 * s), fill=(200, 40, 40, 255)
    )
    d.ellipse([0.2 * s, 0.24 * s, 0.68 * s, 0.33 * s], fill=(120, 20, 20, 255))
    d.rectangle([0.26 * s, 0.4 * s, 0.32 * s, 0.7 * s], fill=(235, 120, 110, 255))  # highlight


def _gem(d: ImageDraw.ImageDraw, s: int) -> None:
    top = [(0.3 * s, 0.3 * s), (0.7 * s, 0.3 * s), (0.85 * s, 0.45 * s), (0.15 * s, 0.45 * s)]
    d.polygon(top, fill=(90, 160, 240, 255))
    d.polygon(
        [(0.15 * s, 0.45 * s), (0.85 * s, 0.45 * s), (0.5 * s, 0.85 * s)], fill=(30, 80, 200, 255)
    )
    d.polygon(
        [(0.38 * s, 0.45 * s), (0.62 * s, 0.45 * s), (0.5 * s, 0.85 * s)], fill=(60, 120, 225, 255)
    )
    d.polygon(
        [(0.42 * s, 0.3 * s), (0.58 * s, 0.3 * s), (0.62 * s, 0.45 * s), (0.38 * s, 0.45 * s)],
        fill=(170, 210, 255, 255),
    )


def _tree(d: ImageDraw.ImageDraw, s: int) -> None:
    d.rectangle([0.45 * s, 0.72 * s, 0.55 * s, 0.9 * s], fill=(110, 70, 30, 255))
    for i, (y0, half) in enumerate([(0.45, 0.32), (0.3, 0.25), (0.15, 0.18)]):
        shade = (30 + 15 * i, 120 + 25 * i, 50 + 10 * i, 255)
        d.polygon(
            [
                (0.5 * s, y0 * s),
                ((0.5 - half) * s, (y0 + 0.3) * s),
                ((0.5 + half) * s, (y0 + 0.3) * s),
            ],
            fill=shade,
        )


def _duck(d: ImageDraw.ImageDraw, s: int) -> None:
    d.ellipse([0.15 * s, 0.45 * s, 0.8 * s, 0.85 * s], fill=(245, 205, 40, 255))  # body
    d.ellipse([0.5 * s, 0.2 * s, 0.8 * s, 0.52 * s], fill=(250, 215, 60, 255))  # head
    d.polygon(
        [(0.78 * s, 0.34 * s), (0.95 * s, 0.38 * s), (0.78 * s, 0.43 * s)], fill=(240, 120, 20, 255)
    )
    d.ellipse([0.66 * s, 0.29 * s, 0.71 * s, 0.34 * s], fill=(20, 20, 20, 255))  # eye
    d.ellipse([0.25 * s, 0.55 * s, 0.55 * s, 0.72 * s], fill=(225, 180, 30, 255))  # wing


PROMPTS: dict[str, tuple[Drawer, str]] = {
    "red_mug": (_mug, "a red ceramic mug"),
    "blue_gem": (_gem, "a blue faceted gemstone"),
    "pine_tree": (_tree, "a small green pine tree"),
    "rubber_duck": (_duck, "a yellow rubber duck"),
}


def draw(name: str) -> Image.Image:
    """The RGBA prompt image `name` (SIZE x SIZE)."""
    drawer, _ = PROMPTS[name]
    big = Image.new("RGBA", (SIZE * SCALE, SIZE * SCALE), (0, 0, 0, 0))
    drawer(ImageDraw.Draw(big), SIZE * SCALE)
    return big.resize((SIZE, SIZE), Image.Resampling.LANCZOS)


def write(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (_, caption) in PROMPTS.items():
        path = out / f"{name}.png"
        draw(name).save(path, optimize=True)
        (out / f"{name}.txt").write_text(caption + "\n")
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "default_prompts"
    )
    for path in write(parser.parse_args().out):
        print(path)


if __name__ == "__main__":
    main()
