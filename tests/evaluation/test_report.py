"""The report folder: index.html whose images exist, results.json, the models named."""

from __future__ import annotations

import json
import re

import numpy as np

from evaluation.metrics import ModelInfo, summarize
from evaluation.prompts import PromptProblem
from evaluation.report import fit_square, write_report
from evaluation.results import PromptResult, RunResult


def _run(label: str, with_gt: bool, seed: int) -> RunResult:
    rng = np.random.default_rng(seed)
    prompts = []
    for i in range(2):
        views = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
        scores = {"qis": list(rng.uniform(1, 3, 4)), "clip_im": list(rng.uniform(70, 90, 4))}
        if with_gt:
            scores |= {"psnr": [float("inf"), 20.0, 21.0, 22.0], "ssim": [1.0, 0.5, 0.6, 0.7]}
        prompts.append(
            PromptResult(
                name=f"obj{i}",
                text="a <b>bold</b> duck" if i == 0 else None,
                source=f"obj{i}.png",
                prompt_image=rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
                views=views,
                gt_views=views.copy() if with_gt else None,
                scores=scores,
                leaked=(i == 1),
            )
        )
    keys = sorted({k for p in prompts for k in p.scores})
    summary = {k: summarize([p.scores[k] for p in prompts]) for k in keys}
    return RunResult(
        label, f"runs/{label}/export", "local_pixel", prompts, summary, 1.5, [0, 90, 180, 270]
    )


def test_report_references_existing_images_and_names_the_models(tmp_path) -> None:
    models = [
        ModelInfo("clip", "laion-CLIP-ViT-H-14", "/weights/clip-h14", False),
        ModelInfo("inception", "tiny-random-classifier", None, True),
    ]
    leakage = {
        "mode": "flag",
        "training_shards": 3,
        "checked": 2,
        "unchecked": [],
        "leaks": [{"prompt": "obj1", "by": ["uid"]}],
    }
    runs = [_run("step_1000", True, 0), _run("step_2000", False, 1)]
    index = write_report(
        tmp_path / "report", runs, models, leakage, {"sampler": {"num_inference_steps": 50}}
    )
    page = index.read_text()

    sources = re.findall(r"""src=['"]([^'"]+)['"]""", page)
    assert len(sources) >= 1 + 2 * 2 * 5 + 2 * 4  # plot + prompt and views + ground truth
    for src in sources:
        assert (index.parent / src).is_file(), src
    for name in (
        "laion-CLIP-ViT-H-14",
        "/weights/clip-h14",
        "tiny-random-classifier",
        "runs/step_1000/export",
    ):
        assert name in page
    assert "RANDOM" in page and "LEAKAGE" in page and "IN TRAINING SET" in page
    assert "&lt;b&gt;bold" in page  # captions are escaped
    assert "±" in page and "step_2000" in page

    text = (index.parent / "results.json").read_text()
    results = json.loads(text, parse_constant=_refuse)  # strict JSON: no Infinity/NaN
    assert results["runs"][0]["prompts"][0]["scores"]["psnr"][0] == "inf"
    assert results["models"][0]["path"] == "/weights/clip-h14"
    assert results["runs"][1]["summary"]["qis"]["n_images"] == 8


def test_report_lists_skipped_prompts_and_prompts_with_their_background(tmp_path) -> None:
    run = _run("step_1000", False, 0)
    run.prompts[0].background_kept = True
    run.prompts[0].source = "/prompts/photo_<1>.jpg"
    skipped = [
        PromptProblem("/prompts/garbage.jpg", "not a readable PNG/JPEG/WEBP image"),
        PromptProblem(
            "/prompts/cut.jpg", "cannot decode the image (OSError: image file is truncated)"
        ),
    ]
    config = {"prompt": {"remove_background": None}}
    index = write_report(tmp_path, [run], [], {"mode": "off"}, config, skipped=skipped)
    page = index.read_text()
    assert "Skipped prompts" in page and "2 skipped" in page
    for problem in skipped:
        assert problem.path in page and problem.reason in page
    assert "Prompts with their background" in page and "BACKGROUND KEPT" in page
    assert "/prompts/photo_&lt;1&gt;.jpg" in page  # escaped
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["skipped_prompts"] == [p.to_dict() for p in skipped]
    assert results["background_kept"] == [{"name": "obj0", "source": "/prompts/photo_<1>.jpg"}]
    assert [p["background_kept"] for p in results["runs"][0]["prompts"]] == [True, False]
    # nothing to say: no section
    clean = write_report(tmp_path / "clean", [_run("a", False, 0)], [], {"mode": "off"}, {})
    assert "Skipped prompts" not in clean.read_text()
    assert "Prompts with their background" not in clean.read_text()


def _refuse(name: str) -> None:
    raise ValueError(f"results.json holds {name}, which is not JSON")


def test_wandb_offline_logs_a_table_with_images(tmp_path, monkeypatch) -> None:
    from evaluation.config import WandbConfig
    from evaluation.report import log_wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    runs = [_run("step_1000", True, 0)]
    models = [ModelInfo("clip", "tiny", None, True)]
    write_report(tmp_path, runs, models, {"mode": "off"}, {})
    log_wandb(runs, models, WandbConfig(mode="offline"), {"a": 1}, tmp_path)
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    media = [p.name for p in run_dir.rglob("*") if p.is_file()]
    assert any(name.endswith(".table.json") for name in media), media
    assert sum(name.endswith(".png") for name in media) >= 3, media  # 2 strips + the chart


def test_fit_square_resizes_anything_but_a_square_of_the_size() -> None:
    """The one resize of evaluate and report: a (size, size) image is kept as it is; any other,
    a non-square one of that height included, becomes (size, size)."""
    square = np.zeros((16, 16, 3), dtype=np.uint8)
    assert fit_square(square, 16) is square
    assert fit_square(square, 8).shape == (8, 8, 3)
    assert fit_square(np.zeros((16, 24, 3), dtype=np.uint8), 16).shape == (16, 16, 3)
