"""How a QualityReport (data_pipeline.job.quality_report) looks: one self-contained HTML page, and
the same figures as W&B media. Histograms are drawn with matplotlib when it imports, else as
inline SVG."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

from PIL import Image

from data_pipeline.job.quality_report import HISTOGRAMS, Histogram, QualityReport, SheetRing

SHEET_COLUMNS = 3  # rings per row of the W&B contact sheet image

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
td.n { text-align: right; }
.hists { display: flex; flex-wrap: wrap; gap: 1em; }
.hists figure { margin: 0; }
.sheet td { font-size: 0.85em; max-width: 28em; }
code { font-size: 0.9em; }
"""


def render_html(report: QualityReport) -> str:
    data = report.to_json()
    esc = html.escape
    parts = [
        "<!doctype html>",
        '<html><head><meta charset="utf-8"><title>render quality</title>',
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Render quality: <code>{esc(report.output_dir)}</code></h1>",
        "<table>",
        *(
            f"<tr><th>{esc(label)}</th><td class='n'>{data[key]}</td></tr>"
            for label, key in [
                ("shards", "shards"),
                ("objects", "objects"),
                ("rings", "rings"),
                ("rings with notes (asset defects rendered through)", "rings_with_notes"),
                ("quarantined objects", "quarantined"),
            ]
        ),
        *(
            f"<tr><th>rings from {esc(src)}</th><td class='n'>{n}</td></tr>"
            for src, n in data["rings_by_source"].items()
        ),
        "</table>",
        _quarantine_table(report),
        "<h2>Distributions</h2><div class='hists'>",
        *(_figure(h) for h in report.histograms()),
        "</div>",
        _sheet_table(report.shards.sheet_rings()),
    ]
    if report.torn_lines:
        parts.append(f"<p>{report.torn_lines} unreadable ledger lines were skipped.</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _quarantine_table(report: QualityReport) -> str:
    esc = html.escape
    if not report.quarantined:
        return "<h2>Quarantine</h2><p>No quarantined objects.</p>"
    rows = []
    for reason, count in sorted(report.quarantined.items(), key=lambda kv: (-kv[1], kv[0])):
        examples = "<br>".join(
            f"<code>{esc(str(e['uid']))}</code> {esc(str(e['path']))}: "
            f"{esc(str(e['detail'])[:300])}"
            for e in report.examples.get(reason, [])
        )
        rows.append(
            f"<tr><td><b>{esc(reason)}</b></td><td class='n'>{count}</td><td>{examples}</td></tr>"
        )
    return (
        "<h2>Quarantine</h2><table><tr><th>reason</th><th>objects</th><th>examples</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _sheet_table(rings: list[SheetRing]) -> str:
    esc = html.escape
    if not rings:
        return "<h2>Contact sheet</h2><p>No rings.</p>"
    rows = "".join(
        f"<tr><td><img alt='{esc(r.key)}' src='{_data_uri(r.strip_png)}'></td>"
        f"<td><code>{esc(r.key)}</code><br>{esc(r.caption)}<br>{esc(r.source)}, "
        f"border fraction up to {r.border:.2f}</td></tr>"
        for r in rings
    )
    return (
        f"<h2>Contact sheet</h2><p>{len(rings)} rings (lowest sha1 of the sample key), views at "
        "azimuth 0, 90, 180, 270.</p>"
        f"<table class='sheet'>{rows}</table>"
    )


def _figure(hist: Histogram) -> str:
    esc = html.escape
    stats = f"n = {hist.total}"
    if hist.total:
        stats += f", mean {hist.mean:.3g}, min {hist.min:.3g}, max {hist.max:.3g}"
    if hist.nonfinite:
        stats += f", {hist.nonfinite} not finite"
    plot = _plot_png(hist)
    image = f"<img alt='{esc(hist.title)}' src='{_data_uri(plot)}'>" if plot else _plot_svg(hist)
    return f"<figure>{image}<figcaption>{esc(hist.title)}: {esc(stats)}</figcaption></figure>"


def _plot_png(hist: Histogram) -> bytes | None:
    """A bar chart of the bins with matplotlib (no pyplot state); None without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(4.2, 2.6), dpi=90)
    ax = fig.add_subplot()
    widths = [b - a for a, b in zip(hist.edges, hist.edges[1:], strict=False)]
    ax.bar(hist.edges[:-1], hist.counts, width=widths, align="edge", color="#4878a8")
    if hist.log:
        ax.set_xscale("log")
    ax.set_title(hist.title, fontsize=9)
    ax.set_xlabel(hist.unit or "value", fontsize=8)
    ax.set_ylabel("count", fontsize=8)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _plot_svg(hist: Histogram, width: int = 380, height: int = 200) -> str:
    top = max(hist.counts, default=0) or 1
    bar = width / max(len(hist.counts), 1)
    rects = "".join(
        f"<rect x='{i * bar:.1f}' y='{height - height * n / top:.1f}' width='{bar - 1:.1f}' "
        f"height='{height * n / top:.1f}' fill='#4878a8'><title>{n}</title></rect>"
        for i, n in enumerate(hist.counts)
    )
    return (
        f"<svg width='{width}' height='{height}' xmlns='http://www.w3.org/2000/svg'>{rects}</svg>"
    )


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def contact_sheet_image(rings: list[SheetRing], columns: int = SHEET_COLUMNS) -> Image.Image | None:
    """The sheet's strips in a grid (row-major, by key), for W&B."""
    if not rings:
        return None
    strips = [Image.open(io.BytesIO(r.strip_png)).convert("RGB") for r in rings]
    w, h = strips[0].size
    rows = -(-len(strips) // columns)
    sheet = Image.new("RGB", (columns * w + (columns - 1) * 4, rows * h + (rows - 1) * 4), "white")
    for i, strip in enumerate(strips):
        sheet.paste(strip, ((i % columns) * (w + 4), (i // columns) * (h + 4)))
    return sheet


def wandb_media(report: QualityReport, wandb: Any) -> dict[str, Any]:
    """W&B objects for `run.log`: histograms, the contact sheet, the HTML page."""
    media: dict[str, Any] = {}
    for name, hist in zip(HISTOGRAMS, report.histograms(), strict=True):
        if hist.total:
            media[f"quality/{name}"] = wandb.Histogram(np_histogram=(hist.counts, hist.edges))
    rings = report.shards.sheet_rings()
    sheet = contact_sheet_image(rings)
    if sheet is not None:
        keys = ", ".join(r.key for r in rings)
        media["quality/contact_sheet"] = wandb.Image(sheet, caption=f"rings (row-major): {keys}")
    media["quality/report"] = wandb.Html(render_html(report), inject=False, data_is_not_path=True)
    return media
