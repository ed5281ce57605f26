"""Built-in example objects: small, textured and clearly asymmetric, written as GLB.

They let `make render` and the tests run without Objaverse, and they make camera mistakes
visible: front, back, left and right of every object differ, so a 90-degree azimuth error or a
mirrored camera changes what a view shows. Each object is built in Blender's frame (z up, front
towards -Y, i.e. facing the azimuth-0 camera) and written in glTF's frame (y up, front +Z); Blender's
glTF importer maps glTF +Z back to -Y (SPEC 2).

Colour comes from one small palette texture: every part's vertices sample the centre of one
palette cell, so each part is flat-coloured and the files stay tiny. Output bytes are
deterministic (same sha256 on every run with the same trimesh and Pillow).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Named colours (sRGB 0-255); the palette texture holds them in this order, one 4x4 cell each.
PALETTE: dict[str, tuple[int, int, int]] = {
    "cream": (235, 220, 180),
    "roof_red": (180, 40, 30),
    "door_blue": (20, 60, 220),
    "chimney_grey": (70, 70, 70),
    "window_yellow": (250, 210, 40),
    "robot_silver": (170, 175, 185),
    "arrow_green": (20, 200, 60),
    "pack_orange": (240, 120, 20),
    "eye_black": (15, 15, 15),
    "mug_white": (240, 240, 240),
    "logo_magenta": (220, 30, 200),
    "handle_teal": (20, 160, 160),
}
_CELL = 4
_COLS = 4


@dataclass(frozen=True)
class Part:
    """A box or cylinder in Blender's frame: centre, size (box extents or cylinder r, r, h)."""

    shape: str  # "box" or "cylinder"
    centre: tuple[float, float, float]
    size: tuple[float, float, float]
    colour: str


# Each object: (name, caption, parts). Front = -Y. "Left" = -X seen from the front camera.
OBJECTS: dict[str, tuple[str, list[Part]]] = {
    "house": (
        "a small cream house with a red roof, a blue front door, a yellow window on its right "
        "side and a grey chimney at the back left",
        [
            Part("box", (0.0, 0.0, 0.25), (1.0, 0.7, 0.5), "cream"),
            Part("box", (0.0, 0.0, 0.57), (1.06, 0.76, 0.14), "roof_red"),
            Part("box", (0.0, 0.0, 0.70), (0.7, 0.45, 0.12), "roof_red"),
            Part("box", (0.15, -0.36, 0.17), (0.22, 0.04, 0.34), "door_blue"),
            Part("box", (0.51, 0.05, 0.3), (0.04, 0.3, 0.18), "window_yellow"),
            Part("box", (-0.33, 0.2, 0.8), (0.14, 0.14, 0.4), "chimney_grey"),
        ],
    ),
    "robot": (
        "a silver robot with a green arrow on its chest, one raised arm on its right side and an "
        "orange backpack",
        [
            Part("box", (0.0, 0.0, 0.45), (0.5, 0.3, 0.5), "robot_silver"),
            Part("box", (0.0, 0.0, 0.85), (0.3, 0.25, 0.26), "robot_silver"),
            Part("box", (-0.07, -0.13, 0.88), (0.06, 0.02, 0.06), "eye_black"),
            Part("box", (0.07, -0.13, 0.88), (0.06, 0.02, 0.06), "eye_black"),
            Part("box", (0.0, -0.16, 0.5), (0.08, 0.02, 0.22), "arrow_green"),
            Part("box", (0.0, -0.17, 0.38), (0.22, 0.02, 0.08), "arrow_green"),
            Part("box", (0.0, 0.22, 0.47), (0.36, 0.14, 0.36), "pack_orange"),
            Part("box", (0.32, 0.0, 0.75), (0.12, 0.12, 0.55), "robot_silver"),
            Part("box", (-0.1, 0.0, 0.1), (0.12, 0.14, 0.2), "robot_silver"),
            Part("box", (0.1, 0.0, 0.1), (0.12, 0.14, 0.2), "robot_silver"),
        ],
    ),
    "mug": (
        "a white mug with a teal handle on its left and a magenta logo on the front",
        [
            Part("cylinder", (0.0, 0.0, 0.3), (0.3, 0.3, 0.6), "mug_white"),
            Part("box", (-0.38, 0.0, 0.47), (0.2, 0.07, 0.07), "handle_teal"),
            Part("box", (-0.38, 0.0, 0.13), (0.2, 0.07, 0.07), "handle_teal"),
            Part("box", (-0.45, 0.0, 0.3), (0.07, 0.07, 0.4), "handle_teal"),
            Part("box", (0.0, -0.29, 0.32), (0.24, 0.04, 0.24), "logo_magenta"),
        ],
    ),
}

# Blender frame -> glTF frame, the inverse of the importer's (x, y, z) -> (x, -z, y).
_Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


Palette = dict[str, tuple[int, int, int]]


def palette_uv(colour: str, palette: Palette = PALETTE) -> tuple[float, float]:
    """glTF UV (origin top-left, v down) of the centre of a colour's palette cell."""
    index = list(palette).index(colour)
    rows = -(-len(palette) // _COLS)
    col, row = index % _COLS, index // _COLS
    return (col + 0.5) / _COLS, (row + 0.5) / rows


def _palette_image(palette: Palette = PALETTE):
    from PIL import Image

    rows = -(-len(palette) // _COLS)
    pixels = np.zeros((rows * _CELL, _COLS * _CELL, 3), dtype=np.uint8)
    for index, rgb in enumerate(palette.values()):
        row, col = divmod(index, _COLS)
        pixels[row * _CELL : (row + 1) * _CELL, col * _CELL : (col + 1) * _CELL] = rgb
    return Image.fromarray(pixels, mode="RGB")


def _part_mesh(part: Part):
    import trimesh

    transform = np.eye(4)
    transform[:3, 3] = part.centre
    if part.shape == "box":
        mesh = trimesh.creation.box(extents=part.size, transform=transform)
    elif part.shape == "cylinder":
        mesh = trimesh.creation.cylinder(radius=part.size[0], height=part.size[2], sections=32)
        mesh.apply_translation(part.centre)
    else:
        raise ValueError(f"unknown part shape {part.shape!r}")
    mesh.unmerge_vertices()  # flat shading: every face gets its own vertices (and normals)
    return mesh


def build_mesh(name: str, frame: str = "blender"):
    """One named object as a textured trimesh.Trimesh, "blender" (z up) or "gltf" (y up)."""
    return mesh_from_parts(name, OBJECTS[name][1], PALETTE, frame)


def mesh_from_parts(name: str, parts: list[Part], palette: Palette, frame: str = "blender"):
    """Parts coloured from `palette` (one palette texture per object) as a textured mesh."""
    import trimesh

    meshes, uvs = [], []
    for part in parts:
        mesh = _part_mesh(part)
        meshes.append(mesh)
        uvs.append(np.tile(palette_uv(part.colour, palette), (len(mesh.vertices), 1)))
    vertices = np.concatenate([m.vertices for m in meshes])
    offsets = np.cumsum([0] + [len(m.vertices) for m in meshes[:-1]])
    faces = np.concatenate([m.faces + off for m, off in zip(meshes, offsets, strict=True)])
    if frame == "gltf":
        vertices = vertices @ _Z_UP_TO_Y_UP.T
    elif frame != "blender":
        raise ValueError(f"frame must be 'blender' or 'gltf', got {frame!r}")
    uv = np.concatenate(uvs)
    # trimesh stores UV with v up (OpenGL) and flips on glTF export.
    uv = np.stack([uv[:, 0], 1.0 - uv[:, 1]], axis=1)
    material = trimesh.visual.material.PBRMaterial(
        name=f"{name}_palette",
        baseColorTexture=_palette_image(palette),
        metallicFactor=0.0,
        roughnessFactor=0.8,
    )
    visual = trimesh.visual.TextureVisuals(uv=uv, material=material)
    return trimesh.Trimesh(vertices=vertices, faces=faces, visual=visual, process=False)


def glb_bytes(name: str) -> bytes:
    return mesh_glb(name, build_mesh(name, frame="gltf"))


def mesh_glb(name: str, mesh) -> bytes:
    """A glTF-frame mesh as GLB bytes (deterministic for the same trimesh and Pillow)."""
    import trimesh

    scene = trimesh.Scene()
    scene.add_geometry(mesh, geom_name=name, node_name=name)
    return trimesh.exchange.gltf.export_glb(scene, include_normals=True)


def write_builtin_samples(directory: str | Path) -> list[Path]:
    """Write every built-in object as `<name>.glb` plus its caption `<name>.txt`; returns the GLBs."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (caption, _) in OBJECTS.items():
        path = directory / f"{name}.glb"
        path.write_bytes(glb_bytes(name))
        (directory / f"{name}.txt").write_text(caption + "\n", encoding="utf-8")
        written.append(path)
    return written
