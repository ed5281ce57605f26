"""The report of `make gpu-check` (bench.gpu_check): OUT/gpu.json and OUT/gpu.md, its
first line saying whether it ran on a GPU or, without one, at tiny sizes on the CPU."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.gpu_thresholds import MAX_LOSS_REL, MAX_SAMPLE_REL, MIN_IOU, MIN_PSNR_DB, VARIANTS


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """A markdown table: its header, the separator and one line per row of cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def write_report(result: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps(result, indent=1, sort_keys=True, default=str) + "\n")
    lines = ["# GPU check (`make gpu-check`)", "", f"**{result['mode_line']}**", ""]
    lines += [f"Machine: {result['machine']}. Total {result['seconds']:.0f} s.", ""]
    r = result.get("render", {})
    lines += ["## 1. Render", ""]
    if "error" in r:
        lines += [f"FAILED: {r['error']}", ""]
    else:
        jobs = [(name, r[name]) for name in ("main", "compare_gpu", "compare_cpu") if name in r]
        lines += _table(
            ["job", "device (Cycles, backend)", "views", "s/view", "objects/h per worker",
             "job s", "settings"],
            [[name, f"{j['device']} ({', '.join(j['cycles_device'])}, "
                    f"{', '.join(j['compute_backend'])})", j["views"],
              f"{j['seconds_per_view']:.3f}", _rate(j.get("objects_per_hour_per_worker")),
              f"{j['job_seconds']:.1f}", j["settings"]]
             for name, j in jobs],
        )  # fmt: skip
        ious = {**r["main"]["min_iou"], **r["compare_cpu"]["min_iou"]}
        lines += ["", f"Camera/alpha check, smallest IoU per object (>= {MIN_IOU}): "
                  + ", ".join(f"{k} {v:.3f}" for k, v in sorted(ious.items())) + "."]  # fmt: skip
        lines += [f"GPU vs CPU render of the same ring, PSNR (>= {MIN_PSNR_DB} dB): "
                  + ", ".join(f"{k} {v:.1f}" for k, v in sorted(r["psnr_db"].items())) + "."]  # fmt: skip
        if "gpu_speedup_per_view" in r:
            lines.append(f"GPU speed-up per view: {r['gpu_speedup_per_view']:.1f}x.")
        lines.append("")
    t = result.get("training", {})
    lines += ["## 2. Training", ""]
    for variant in VARIANTS:
        v = t.get(variant, {})
        if "error" in v:
            lines += [f"{variant}: FAILED: {v['error'][-800:]}", ""]
            continue
        if not v:
            continue
        lines += [f"**{variant}**: UNet {v['unet_params_m']:.1f} M params, {v['precision']}, "
                  f"ZeRO-{v['zero_stage']}, {v['backend']} via {v.get('launcher', '?')} on "
                  f"{v['device']}; network built in {v['build_seconds']:.1f} s.", ""]  # fmt: skip
        rows = []
        for c in v["cases"]:
            case = [f"{c['batch']}{' (largest)' if c.get('largest') else ''}",
                    c["gradient_checkpointing"]]  # fmt: skip
            if "step_s" in c:
                rows.append([*case, f"{c['step_s']:.3f}", f"{c['samples_per_s']:.2f}",
                             f"{c['peak_gib']:.2f}", f"{c['loss']:.4f}"])  # fmt: skip
            else:
                rows.append([*case, c.get("error", "?")[:80], "", "", ""])
        lines += _table(
            ["batch", "grad. checkpointing", "step s", "samples/s", "peak GiB", "loss"], rows
        )
        f = v["fp32_step1"]
        lines += ["", f"fp32 loss of step 1: {f['device']:.7f} on {v['device']}, {f['cpu']:.7f} "
                  f"on the CPU, relative difference {f['rel_diff']:.2e} (<= {MAX_LOSS_REL:g}).", ""]  # fmt: skip
    s = result.get("sampling", {})
    lines += ["## 3. Sampling", ""]
    if "error" in s:
        lines += [f"FAILED: {s['error']}", ""]
    elif s:
        lines += [f"local_pixel at {s['resolution']} px, {s['steps']} DDIM steps with CFG:", ""]
        rows = [
            [c["dtype"], f"{c['seconds_per_prompt']:.2f}", f"{c['first_seconds']:.2f}",
             f"{c['peak_gib']:.2f}"]
            if "seconds_per_prompt" in c
            else [c["dtype"], f"{'skipped' if c.get('skipped') else 'FAILED'}: {c['error'][:100]}",
                  "", ""]
            for c in s["cases"]
        ]  # fmt: skip
        lines += _table(["dtype", "s/prompt", "first call s", "peak GiB"], rows)
        o = s["fp32_one_step"]
        lines += ["", f"One fp32 step, accelerator against CPU: relative difference "
                  f"{o['rel_diff']:.2e} (<= {MAX_SAMPLE_REL:g}).", ""]  # fmt: skip
    lines += ["## Verdict", "", ", ".join(f"{k}: {'ok' if v else 'FAILED'}"
                                           for k, v in result["ok"].items()), ""]  # fmt: skip
    (out / "gpu.md").write_text("\n".join(lines))


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"
