"""Render quality at speed: `python -m bench.render_quality [--quick]` (`make bench-render-quality`).

For every object (the built-in samples and the real meshes of ../shared/assets), one ring of the
four training views (azimuth 0/90/180/270) is rendered at a reference setting (1024 samples, no
adaptive stopping, no denoiser, generous light paths) and at each row of ROWS: the settings
before tuning, the tuned defaults, single changes of the former, and the settings of public
Objaverse renderers (bench/notes/render_settings_survey.md), all with our cameras and lights (the
same seed, so every row sees the same scene). Rows run one object at a time in one process,
interleaved, so a change of machine load touches every row alike.

Per row: Blender's seconds per view (its render call: sampling, denoising, writing the frames),
and against the reference: PSNR of RGB composited over white on the object (pixels where either
alpha is above 0), SSIM of the same composite, and IoU of the alpha masks (alpha >= 128). Reference renders
are cached by object, settings and Blender version (`--cache`), so a rerun times the rows only.
Writes bench/results/render_quality.{json,md} (`--quick`: render_quality_quick.{json,md}).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.render import collect_objects, default_assets
from contract.schema import decode_png
from data_pipeline.refusals import Refusal
from data_pipeline.render.settings import UNRECORDED_CYCLES, RenderSettings, object_seed

REPO = Path(__file__).resolve().parents[1]
VIEWS = 4  # the training targets; quality is judged where the model learns
RESOLUTION = 256

# The light paths of a converged image: Blender's own defaults (its "Default" light-path preset).
FULL_PATHS: dict[str, Any] = dict(
    max_bounces=12, diffuse_bounces=4, glossy_bounces=4, transmission_bounces=12,
    transparent_max_bounces=8, volume_bounces=0,
)  # fmt: skip
# What main rendered with before issue 20: BlenderProc 2.8's init defaults + 32 spp + OIDN at
# Blender 4.2's defaults (prefilter Accurate, quality High).
BEFORE: dict[str, Any] = {"samples": 32, "cycles": dataclasses.asdict(UNRECORDED_CYCLES)}
# objaverse-xl's and zero123's Cycles block (SyncDreamer's too): 128 spp, OIDN with Blender's
# defaults for what they do not set, short diffuse/glossy paths, a 0.01 px pixel filter, one
# still render per view (persistent data off).
PUBLIC_CYCLES: dict[str, Any] = dict(
    samples=128,
    cycles=dict(
        BEFORE["cycles"], max_bounces=12, diffuse_bounces=1, glossy_bounces=1,
        transmission_bounces=3, transparent_max_bounces=3, pixel_filter_width=0.01,
        persistent_data=False,
    ),
)  # fmt: skip


def _changed(base: dict[str, Any], samples: int | None = None, **cycles: Any) -> dict[str, Any]:
    row = {"samples": base["samples"] if samples is None else samples}
    row["cycles"] = dict(base["cycles"], **cycles)
    return row


def default_row() -> dict[str, Any]:
    settings = RenderSettings()
    return {"samples": settings.samples, "cycles": dataclasses.asdict(settings.cycles)}


# name -> (what it is, samples + cycles settings). "before" is the speed and quality baseline.
ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    "before": ("main before issue 20 (BlenderProc defaults, OIDN Accurate/High)", BEFORE),
    "defaults": ("the tuned defaults (RenderSettings())", default_row()),
    "before, prefilter Fast": ("one change", _changed(BEFORE, denoise_prefilter="FAST")),
    "before, prefilter None": ("one change", _changed(BEFORE, denoise_prefilter="NONE")),
    "before, quality Balanced": ("one change", _changed(BEFORE, denoise_quality="BALANCED")),
    "before, 16 spp": ("one change", _changed(BEFORE, samples=16)),
    "before, adaptive 0.04 from 8 spp": (
        "one change",
        _changed(BEFORE, adaptive_threshold=0.04, adaptive_min_samples=8),
    ),
    "before, glossy 1": ("one change", _changed(BEFORE, glossy_bounces=1)),
    "before, light tree": ("one change", _changed(BEFORE, light_tree=True)),
    "before, diffuse 1": ("one change", _changed(BEFORE, diffuse_bounces=1)),
    "before, no spatial splits": ("one change", _changed(BEFORE, spatial_splits=False)),
    "before, no persistent data": ("one change", _changed(BEFORE, persistent_data=False)),
    "defaults, adaptive 0.02": ("one change", _changed(default_row(), adaptive_threshold=0.02)),
    "defaults, adaptive 0.05": ("one change", _changed(default_row(), adaptive_threshold=0.05)),
    "defaults, no light tree": ("one change", _changed(default_row(), light_tree=False)),
    "defaults, quality Balanced": (
        "one change",
        _changed(default_row(), denoise_quality="BALANCED"),
    ),
    "defaults, 16 spp": ("one change", _changed(default_row(), samples=16)),
    "objaverse-xl / zero123 Cycles": (
        "public: 128 spp, short paths, 0.01 px filter",
        PUBLIC_CYCLES,
    ),
    "TRELLIS": (
        "public: as objaverse-xl but Blender's 1.5 px filter (its `filter_type` is not a 4.2 "
        "property)",
        _changed(PUBLIC_CYCLES, pixel_filter_width=1.5),
    ),
}
QUICK_ROWS = ("before", "defaults", "objaverse-xl / zero123 Cycles")
REFERENCE = {
    "samples": 1024,
    "denoise": False,
    "cycles": dict(BEFORE["cycles"], adaptive_sampling=False, **FULL_PATHS),
}


def row_settings(row: dict[str, Any], **base: Any) -> RenderSettings:
    """RenderSettings of one row: one ring of the training views at RESOLUTION, on the CPU."""
    fixed: dict[str, Any] = dict(num_views=VIEWS, rings=1, resolution=RESOLUTION, device="cpu")
    return RenderSettings(**fixed, **base, **row)


# ----------------------------------------------------------------------------- metrics


def fg_psnr(reference: np.ndarray, image: np.ndarray) -> float:
    """PSNR (dB) of RGB composited over white, on the pixels where either image has alpha > 0;
    (V, H, W, 4) uint8 straight alpha. Compositing first weighs an edge pixel by its coverage
    (the straight colour of a nearly transparent pixel is noise the picture never shows)."""
    mask = (reference[..., 3] > 0) | (image[..., 3] > 0)
    if not mask.any():
        return float("inf")
    diff = (over_white(reference) - over_white(image))[mask]
    mse = float(np.mean(diff**2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(1.0 / mse))


def over_white(rgba: np.ndarray) -> np.ndarray:
    """Straight-alpha RGBA composited over white, float in [0, 1]; (..., 4) -> (..., 3)."""
    x = rgba.astype(np.float64) / 255.0
    return x[..., :3] * x[..., 3:] + (1.0 - x[..., 3:])


def ssim(reference: np.ndarray, image: np.ndarray) -> float:
    """Mean SSIM (torchmetrics, Gaussian 11 px window) of the views composited over white."""
    import torch
    from torchmetrics.functional.image import structural_similarity_index_measure

    def tensor(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(over_white(x)).permute(0, 3, 1, 2).float()

    value = structural_similarity_index_measure(tensor(image), tensor(reference), data_range=1.0)
    assert isinstance(value, torch.Tensor)  # one score (no full SSIM image was asked for)
    return float(value)


def alpha_iou(reference: np.ndarray, image: np.ndarray) -> float:
    a, b = reference[..., 3] >= 128, image[..., 3] >= 128
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


# ----------------------------------------------------------------------------- rendering


def render_ring(asset: Path, settings: RenderSettings) -> tuple[np.ndarray, float]:
    """(V, H, W, 4) uint8 views of ring 0 and Blender's seconds for them."""
    from data_pipeline.render.blender import render_object

    uid = asset.stem
    ring = render_object(asset, uid, "", "bench", settings, object_seed(0, uid))[0]
    views = np.stack([decode_png(png, uid, i) for i, png in enumerate(ring.views_png)])
    return views, ring.blender_seconds


def reference_key(asset: Path, settings: RenderSettings) -> str:
    from data_pipeline.render.blenderproc_env import blender_version, ensure_blenderproc

    ensure_blenderproc()
    blob = json.dumps(
        {"asset": hashlib.sha256(asset.read_bytes()).hexdigest(),
         "settings": dataclasses.asdict(settings), "blender": blender_version()},
        sort_keys=True,
    )  # fmt: skip
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def reference_ring(asset: Path, settings: RenderSettings, cache: Path | None) -> dict[str, Any]:
    file = None if cache is None else cache / f"{asset.stem}-{reference_key(asset, settings)}.npz"
    if file is not None and file.is_file():
        with np.load(file) as saved:
            return {"views": saved["views"], "seconds": float(saved["seconds"]), "cached": True}
    views, seconds = render_ring(asset, settings)
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(file, views=views, seconds=seconds)
    return {"views": views, "seconds": seconds, "cached": False}


def measure(
    objects: list[Path], rows: dict[str, tuple[str, dict[str, Any]]], reference: dict[str, Any],
    cache: Path | None, keep: Path | None,
) -> dict[str, Any]:  # fmt: skip
    per_object: dict[str, dict[str, Any]] = {}
    for asset in objects:
        print(f"== {asset.name}", flush=True)
        ref = reference_ring(asset, row_settings(reference), cache)
        entry: dict[str, Any] = {
            "reference_seconds_per_view": ref["seconds"] / VIEWS, "reference_cached": ref["cached"],
            "rows": {},
        }  # fmt: skip
        if keep is not None:
            np.save(keep / f"{asset.stem}--reference.npy", ref["views"])
        for name, (_, row) in rows.items():
            try:
                views, seconds = render_ring(asset, row_settings(row))
            except Refusal as exc:
                entry["rows"][name] = {"error": str(exc)}
                continue
            entry["rows"][name] = {
                "seconds_per_view": seconds / VIEWS,
                "psnr_fg": fg_psnr(ref["views"], views),
                "ssim": ssim(ref["views"], views),
                "alpha_iou": alpha_iou(ref["views"], views),
            }
            if keep is not None:
                np.save(keep / f"{asset.stem}--{slug(name)}.npy", views)
            print(f"   {name}: {entry['rows'][name]}", flush=True)
        per_object[asset.name] = entry
    return per_object


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def summarise(per_object: dict[str, Any], rows: dict[str, Any]) -> dict[str, Any]:
    """Per row: total Blender seconds / total views, mean PSNR, SSIM, IoU over objects, and the
    time ratio to "before" measured on the same objects in the same run."""
    table = {}
    for name in rows:
        results = [o["rows"][name] for o in per_object.values() if "error" not in o["rows"][name]]
        if not results:
            continue
        table[name] = {
            "objects": len(results),
            "seconds_per_view": float(np.mean([r["seconds_per_view"] for r in results])),
            "psnr_fg": float(np.mean([r["psnr_fg"] for r in results])),
            "psnr_fg_min": float(np.min([r["psnr_fg"] for r in results])),
            "ssim": float(np.mean([r["ssim"] for r in results])),
            "alpha_iou": float(np.mean([r["alpha_iou"] for r in results])),
        }
    if "before" in table:
        for row in table.values():
            row["speedup_vs_before"] = table["before"]["seconds_per_view"] / row["seconds_per_view"]
    return table


def write_markdown(result: dict[str, Any], path: Path) -> None:
    m, table = result["machine"], result["table"]
    lines = [
        "# Render quality at speed",
        "",
        f"`{result['command']}`, {result['date']}. Machine: {m['cpus']} CPUs, load average "
        f"{m['load_avg_start']} at start and {m['load_avg_end']} at the end, {m['platform']}; "
        f"{result['blender']}, Cycles on the CPU, threads: {m['threads']}.",
        f"Objects: {', '.join(result['objects'])}. Each: one ring of the {VIEWS} training views at "
        f"{RESOLUTION} px, our cameras and lights (one seed per object for every row).",
        "Reference: 1024 samples per pixel, no adaptive stopping, no denoiser, Blender's default "
        f"light paths (max 12, diffuse 4, glossy 4, transmission 12, transparent 8); "
        f"{result['reference_seconds_per_view']:.1f} s per view.",
        "",
        "s/view: Blender's render call per view (sampling, denoising, writing the frame), mean "
        "over objects. PSNR: RGB over white on the object's pixels (alpha > 0 in either image), mean (min) "
        "over objects. SSIM: RGB over white. IoU: alpha >= 128. Speed-up: 'before' s/view / row "
        "s/view, same objects, same run.",
        "",
        "| row | samples | prefilter | quality | bounces (max/diff/gloss/trans/transp) | "
        "threshold | s/view | speed-up | PSNR dB (min) | SSIM | alpha IoU | what |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in table.items():
        desc, spec = result["rows"][name]
        c = spec["cycles"]
        bounces = (
            f"{c['max_bounces']}/{c['diffuse_bounces']}/{c['glossy_bounces']}/"
            f"{c['transmission_bounces']}/{c['transparent_max_bounces']}"
        )
        lines.append(
            f"| {name} | {spec['samples']} | {c['denoise_prefilter']} | {c['denoise_quality']} | "
            f"{bounces} | {c['adaptive_threshold'] if c['adaptive_sampling'] else 'off'} | "
            f"{row['seconds_per_view']:.2f} | {row.get('speedup_vs_before', float('nan')):.2f}x | "
            f"{row['psnr_fg']:.2f} ({row['psnr_fg_min']:.2f}) | {row['ssim']:.4f} | "
            f"{row['alpha_iou']:.4f} | {desc} |"
        )
    lines += ["", "## Per object (s/view, PSNR dB)", ""]
    names = list(table)
    lines.append("| object | " + " | ".join(names) + " |")
    lines.append("|---|" + "---|" * len(names))
    for obj, entry in result["per_object"].items():
        cells = []
        for name in names:
            r = entry["rows"].get(name, {})
            cells.append(
                "error" if "error" in r else f"{r['seconds_per_view']:.2f}, {r['psnr_fg']:.1f}"
            )
        lines.append(f"| {obj} | " + " | ".join(cells) + " |")
    lines.append("")
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true",
        help="three objects, three rows, a 256 spp reference (minutes)",
    )  # fmt: skip
    parser.add_argument("--assets", type=Path, default=default_assets())
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument(
        "--cache", type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "imagedream" / "render_reference",
        help="reference renders, reused by later runs",
    )  # fmt: skip
    parser.add_argument("--no-cache", action="store_true")
    parser.add_argument("--keep", type=Path, default=None, help="save every ring as .npy here")
    parser.add_argument("--rows", nargs="+", default=None, help="only these rows (by name)")
    args = parser.parse_args(argv)

    rows = {
        k: v for k, v in ROWS.items() if k in (args.rows or (QUICK_ROWS if args.quick else ROWS))
    }
    reference = dict(REFERENCE, samples=256) if args.quick else REFERENCE
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    load_start = [round(x, 2) for x in os.getloadavg()]
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="render-quality-") as tmp:
        folder = Path(tmp)
        names = collect_objects(folder, args.assets)
        if args.quick:
            names = names[:1] + [n for n in names if not n.endswith(".glb")][:2]
        per_object = measure(
            [folder / n for n in names], rows, reference,
            None if args.no_cache else args.cache, args.keep,
        )  # fmt: skip
    from data_pipeline.render.blenderproc_env import blender_version

    table = summarise(per_object, rows)
    result = {
        "command": "python -m bench.render_quality" + (" --quick" if args.quick else ""),
        "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime(start)),
        "wall_seconds": time.time() - start,
        "blender": f"Blender {blender_version()}",
        "machine": {
            "cpus": os.cpu_count(),
            "threads": "all cores (Blender's automatic count)",
            "load_avg_start": load_start,
            "load_avg_end": [round(x, 2) for x in os.getloadavg()],
            "platform": platform.platform(),
        },
        "objects": names,
        "reference": reference,
        "reference_seconds_per_view": float(
            np.mean([o["reference_seconds_per_view"] for o in per_object.values()])
        ),
        "rows": {k: list(v) for k, v in rows.items()},
        "table": table,
        "per_object": per_object,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "render_quality_quick" if args.quick else "render_quality"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    write_markdown(result, args.out / f"{stem}.md")
    print((args.out / f"{stem}.md").read_text())
    return result


if __name__ == "__main__":
    main()
