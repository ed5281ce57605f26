"""The evaluation report: a self-contained folder people would rather look at than read.

    <out>/index.html     per prompt: the prompt image beside its generated views (and the true
                         renders when known), the metrics table (mean ± std [95% CI]), the models
                         used, leakage status, the prompt files skipped and the prompts used
                         with their background, plots comparing the evaluated checkpoints
    <out>/images/        every image the page shows (PNG)
    <out>/results.json   every number, per view, per prompt and summarised

When W&B is on (offline by default), the same images and a per-prompt table are logged.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from evaluation.metrics.models import ModelInfo
from evaluation.prompts import PromptProblem
from evaluation.results import METRICS, RunResult

DISPLAY_PX = 128  # generated views are shown at least this wide (tiny models make 16 px views)

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{margin-bottom:4px} .sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:8px 0 20px} td,th{border:1px solid #ddd;padding:4px 8px}
th{background:#f4f4f4} td.num{text-align:right;font-variant-numeric:tabular-nums}
.warn{background:#fff0f0;border:2px solid #c00;padding:10px 14px;margin:12px 0;font-weight:600}
.ok{background:#f0fff0;border:1px solid #4a4;padding:8px 12px;margin:12px 0}
.row{display:flex;gap:6px;align-items:flex-start;margin:4px 0 18px;flex-wrap:wrap}
figure{margin:0;text-align:center;font-size:12px;color:#555}
figure img{width:PXpx;height:PXpx;image-rendering:pixelated;border:1px solid #ccc}
.prompt img{border:2px solid #333} .gt img{border-color:#48a}
.scores{font-size:12px;color:#333;margin-left:12px} .leak{color:#c00;font-weight:700}
""".replace("PX", str(DISPLAY_PX))


def write_report(
    out_dir: str | Path,
    runs: Sequence[RunResult],
    models: Sequence[ModelInfo],
    leakage: dict[str, Any],
    config: dict[str, Any],
    skipped: Sequence[PromptProblem] = (),
) -> Path:
    """Write index.html, images/ and results.json; returns the index.html path. `skipped`: the
    prompt files that could not be used (evaluation.prompts.load_prompt_folder)."""
    out = Path(out_dir)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    kept = [p for p in runs[0].prompts if p.background_kept] if runs else []
    results = {
        "runs": [r.to_dict() for r in runs],
        "models": [m.to_dict() for m in models],
        "leakage": leakage,
        "skipped_prompts": [p.to_dict() for p in skipped],
        "background_kept": [{"name": p.name, "source": p.source} for p in kept],
        "config": config,
    }
    (out / "results.json").write_text(json.dumps(_finite(results), indent=1))
    plot = _write_plot(images / "metrics.png", runs)
    skipped_note = f", {len(skipped)} skipped" if skipped else ""
    body = [
        f"<h1>ImageDream evaluation</h1><p class=sub>{len(runs)} model(s), "
        f"{len(runs[0].prompts) if runs else 0} prompt(s){skipped_note}; numbers in "
        "results.json</p>",
        _models_html(runs, models),
        _leakage_html(leakage),
        _skipped_html(skipped),
        _background_html(runs, config),
        _learning_html(runs, images),
        _table_html(runs),
    ]
    if plot is not None:
        body.append(f'<h2>Comparison</h2><img src="images/{plot.name}" alt="metric bar charts">')
    for r_index, run in enumerate(runs):
        body.append(_gallery_html(run, r_index, images))
    page = (
        "<!doctype html><html><head><meta charset=utf-8><title>ImageDream evaluation</title>"
        f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>"
    )
    index = out / "index.html"
    index.write_text(page)
    return index


# ------------------------------------------------------------------ sections


def _models_html(runs: Sequence[RunResult], models: Sequence[ModelInfo]) -> str:
    rows = [
        f"<tr><td>{html.escape(r.label)}</td><td>checkpoint ({html.escape(r.controller)})</td>"
        f"<td><code>{html.escape(r.checkpoint)}</code></td><td>evaluated model</td></tr>"
        for r in runs
    ]
    for m in models:
        flag = "<b style='color:#c00'>RANDOM STAND-IN</b>" if m.random else "local weights"
        rows.append(
            f"<tr><td>{html.escape(m.name)}</td><td>{html.escape(m.role)}</td>"
            f"<td><code>{html.escape(m.path or '-')}</code></td><td>{flag}</td></tr>"
        )
    random = [m for m in models if m.random]
    warn = ""
    if random:
        names = ", ".join(f"{m.role} ({m.name})" for m in random)
        warn = (
            f"<div class=warn>Metrics computed with RANDOM stand-in networks: {html.escape(names)}."
            " Their numbers measure nothing; set the local weight paths in conf/metrics/ "
            "(docs/EVALUATION.md) for real scores.</div>"
        )
    return (
        f"{warn}<h2>Models used</h2><table><tr><th>name</th><th>role</th><th>path</th>"
        f"<th>weights</th></tr>{''.join(rows)}</table>"
    )


def _leakage_html(leakage: dict[str, Any]) -> str:
    if leakage.get("mode") == "off":
        return "<div class=warn>Leakage check OFF: no training shards given (leakage.training_shards).</div>"
    leaks = leakage.get("leaks", [])
    unchecked = leakage.get("unchecked", [])
    note = (
        f" {len(unchecked)} prompt(s) carry no uid/hash and were not checked." if unchecked else ""
    )
    if leaks:
        names = ", ".join(f"{x['prompt']} (by {'/'.join(x['by'])})" for x in leaks)
        return f"<div class=warn>LEAKAGE: in the training shards: {html.escape(names)}.{note}</div>"
    return (
        f"<div class=ok>Leakage check: {leakage.get('checked', 0)} object(s) against "
        f"{leakage.get('training_shards', 0)} training shard manifest(s), none found.{note}</div>"
    )


def _skipped_html(skipped: Sequence[PromptProblem]) -> str:
    if not skipped:
        return ""
    rows = "".join(
        f"<tr><td><code>{html.escape(p.path)}</code></td><td>{html.escape(p.reason)}</td></tr>"
        for p in skipped
    )
    return (
        f"<h2 id=skipped-prompts>Skipped prompts</h2><div class=warn>{len(skipped)} prompt "
        "file(s) could not be used and were left out of every number below.</div>"
        f"<table><tr><th>file</th><th>reason</th></tr>{rows}</table>"
    )


def _background_html(runs: Sequence[RunResult], config: dict[str, Any]) -> str:
    """Prompts evaluated with their background (no alpha, no matting model) and those whose
    background the matting model removed."""
    prompts = runs[0].prompts if runs else []
    kept = [p for p in prompts if p.background_kept]
    removed = [p for p in prompts if p.background_removed]
    model = (config.get("prompt") or {}).get("remove_background")
    parts = []
    if kept:
        rows = "".join(
            f"<tr><td>{html.escape(p.name)}</td><td><code>{html.escape(p.source)}</code></td></tr>"
            for p in kept
        )
        parts.append(
            f"<h2 id=background-kept>Prompts with their background</h2><div class=warn>"
            f"{len(kept)} prompt(s) have no alpha channel (or no transparent pixel) and were used "
            "with their background; "
            "the paper's protocol removes it (give a local segmentation model as "
            "prompt.remove_background, docs/EVALUATION.md).</div>"
            f"<table><tr><th>prompt</th><th>file</th></tr>{rows}</table>"
        )
    if removed:
        parts.append(
            f"<div class=ok>Background removed by <code>{html.escape(str(model))}</code> for "
            f"{len(removed)} prompt(s): {html.escape(', '.join(p.name for p in removed))}.</div>"
        )
    return "".join(parts)


def _learning_html(runs: Sequence[RunResult], images: Path) -> str:
    """The learning check (model vs baselines on novel views) and the training loss curves."""
    parts = []
    rows = []
    for r in runs:
        check = r.info.get("learning_check")
        if check is None:
            continue
        mean = check["mean_view_psnr"]
        ok = "ok" if check["passed"] else "warn"
        rows.append(
            f"<tr><td>{html.escape(r.label)}</td><td class=num>{check['model_psnr']:.2f}</td>"
            f"<td class=num>{check['copy_psnr']:.2f}</td>"
            f"<td class=num>{'-' if mean is None else f'{mean:.2f}'}</td>"
            f"<td class='num {ok}'><b>{check['margin']:+.2f}</b> "
            f"({'passes' if check['passed'] else 'misses'} {check['bar']:+.1f})</td></tr>"
        )
    if rows:
        parts.append(
            "<h2>Learning check</h2><p>Mean PSNR (dB) of the novel views (azimuth 90/180/270) "
            "against the true renders, next to two baselines that use no network: the prompt "
            "copied to every view, and the mean of all training views.</p><table><tr><th>model"
            "</th><th>model</th><th>prompt copied</th><th>mean training view</th><th>margin over "
            f"the better</th></tr>{''.join(rows)}</table>"
        )
    curves = [(r.label, r.info.get("loss_curve") or []) for r in runs]
    if any(c for _, c in curves):
        plot_loss_curves(dict(curves), images / "loss_curve.png", "train/loss")
        parts.append(
            "<h2>Training loss</h2><img src='images/loss_curve.png' alt='training loss curve'>"
        )
    return "".join(parts)


def plot_loss_curves(curves: dict[str, list[tuple[int, float]]], path: Path, ylabel: str) -> Path:
    """One log-scale line per run: (step, loss) pairs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    for label, curve in curves.items():
        if curve:
            steps, losses = zip(*curve, strict=True)
            ax.plot(steps, losses, label=label)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel(ylabel)
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _table_html(runs: Sequence[RunResult]) -> str:
    keys = [k for k in METRICS if any(k in r.summary for r in runs)]
    head = "".join(f"<th>{METRICS[k][0]} {'↑' if METRICS[k][1] else '↓'}</th>" for k in keys)
    rows = []
    for r in runs:
        cells = "".join(
            f"<td class=num>{r.summary[k].format(3 if k.startswith(('ssim', 'lpips')) else 2)}"
            f"<br><small>n={r.summary[k].n_images}</small></td>"
            if k in r.summary
            else "<td>-</td>"
            for k in keys
        )
        rows.append(
            f"<tr><td>{html.escape(r.label)}</td>{cells}"
            f"<td class=num>{r.seconds_per_prompt:.2f}</td></tr>"
        )
    return (
        "<h2>Metrics</h2><p>mean ± std over images [95% CI of the mean, bootstrap over prompts]"
        "</p><table><tr><th>model</th>"
        f"{head}<th>s / prompt</th></tr>{''.join(rows)}</table>"
    )


def _gallery_html(run: RunResult, r_index: int, images: Path) -> str:
    parts = [f"<h2>Samples: {html.escape(run.label)}</h2>"]
    for p_index, p in enumerate(run.prompts):
        stem = f"r{r_index}_p{p_index:03d}"
        figs = [_figure(images, f"{stem}_prompt.png", p.prompt_image, "prompt", "prompt")]
        for v, view in enumerate(p.views):
            az = run.azimuths_deg[v] if v < len(run.azimuths_deg) else v
            figs.append(_figure(images, f"{stem}_view{v}.png", view, f"az {az:g}°"))
        row = f"<div class=row>{''.join(figs)}</div>"
        if p.gt_views is not None:
            blank = f"<figure style='width:{DISPLAY_PX}px'></figure>"
            gts = [
                _figure(images, f"{stem}_gt{v}.png", g, f"true az {run.azimuths_deg[v]:g}°", "gt")
                for v, g in enumerate(p.gt_views)
            ]
            row += f"<div class=row>{blank}{''.join(gts)}</div>"
        scores = ", ".join(
            f"{METRICS[k][0]} {_mean(vals):.3g}" for k, vals in p.scores.items() if k in METRICS
        )
        leak = " <span class=leak>IN TRAINING SET</span>" if p.leaked else ""
        if p.background_kept:
            leak += " <span class=leak>BACKGROUND KEPT</span>"
        caption = html.escape(p.text) if p.text else "<i>no caption</i>"
        parts.append(
            f"<h3>{html.escape(p.name)}{leak}</h3><div>{caption} "
            f"<span class=scores>elev {p.elevation_deg:.1f}°, FoV {p.fov_deg:.1f}°, seed {p.seed}; "
            f"{scores}</span></div>{row}"
        )
    return "".join(parts)


def _figure(images: Path, name: str, pixels: np.ndarray, label: str, cls: str = "") -> str:
    Image.fromarray(pixels).save(images / name)
    return (
        f"<figure class='{cls}'><img src='images/{name}' alt='{html.escape(label)}'>"
        f"<figcaption>{html.escape(label)}</figcaption></figure>"
    )


def _write_plot(path: Path, runs: Sequence[RunResult]) -> Path | None:
    """Bar chart per metric, one bar per run, error bars = 95% CI (std where no CI)."""
    keys = [k for k in METRICS if any(k in r.summary for r in runs)]
    if not keys or not runs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.2), squeeze=False)
    labels = [r.label for r in runs]
    for ax, key in zip(axes[0], keys, strict=True):
        means, lows, highs = [], [], []
        for r in runs:
            s = r.summary.get(key)
            mean = s.mean if s is not None and math.isfinite(s.mean) else 0.0
            if s is not None and math.isfinite(s.ci_low) and math.isfinite(s.ci_high):
                low, high = mean - s.ci_low, s.ci_high - mean
            elif s is not None and math.isfinite(s.std):
                low = high = s.std
            else:
                low = high = 0.0
            means.append(mean)
            lows.append(max(low, 0.0))
            highs.append(max(high, 0.0))
        ax.bar(range(len(runs)), means, yerr=[lows, highs], capsize=4, color="#4a7bb7")
        ax.set_xticks(range(len(runs)), labels, rotation=30, ha="right", fontsize=8)
        name, higher = METRICS[key]
        ax.set_title(f"{name} {'(higher better)' if higher else '(lower better)'}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ------------------------------------------------------------------ W&B


def log_wandb(
    runs: Sequence[RunResult],
    models: Sequence[ModelInfo],
    wandb_cfg: Any,
    config: dict[str, Any],
    default_dir: str | Path,
) -> None:
    """Images (prompt | views | ground truth strip per prompt) and a per-prompt table, plus the
    report's comparison chart; `default_dir` is the report folder (and W&B's, unless set)."""
    import wandb

    run = wandb.init(
        project=wandb_cfg.project,
        mode=wandb_cfg.mode,
        dir=str(wandb_cfg.dir or default_dir),
        job_type="eval",
        config={"eval": config, "models": [m.to_dict() for m in models]},
    )
    keys = list(METRICS)
    table = wandb.Table(
        columns=["model", "prompt", "text", "image", *[METRICS[k][0] for k in keys]]
    )
    strips = []
    any_gt = any(p.gt_views is not None for r in runs for p in r.prompts)
    for r in runs:
        for p in r.prompts:
            strip = np.concatenate([fit_square(p.prompt_image, p.views.shape[1]), *p.views], axis=1)
            if any_gt:  # a second row (blank without truth): W&B wants one image size per key
                truth = p.gt_views if p.gt_views is not None else np.full_like(p.views, 255)
                gt = np.concatenate([np.full_like(p.views[0], 255), *truth], axis=1)
                strip = np.concatenate([strip, gt], axis=0)
            image = wandb.Image(strip, caption=f"{r.label} / {p.name}: prompt | views (| truth)")
            strips.append(image)
            table.add_data(
                r.label,
                p.name,
                p.text or "",
                image,
                *[_mean(p.scores[k]) if k in p.scores else None for k in keys],
            )
        run.summary.update({f"{r.label}/{k}": s.mean for k, s in r.summary.items()})
    logs: dict[str, Any] = {"eval/samples": table, "eval/views": strips}
    plot = Path(default_dir) / "images" / "metrics.png"
    if plot.is_file():
        logs["eval/metrics"] = wandb.Image(str(plot))
    run.log(logs)
    run.finish()


# ------------------------------------------------------------------ helpers


def fit_square(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) (Lanczos); as it is when already that size."""
    if image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.LANCZOS))


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def _finite(obj: Any) -> Any:
    """JSON has no inf/nan: write them as the strings "inf", "-inf", "nan"."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.generic):
        return _finite(obj.item())
    return obj
