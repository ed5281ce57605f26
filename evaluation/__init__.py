"""Evaluation of a trained or converted ImageDream model (SPEC 6-7).

sampler.py   DDIM multi-view sampling with one CFG scale over text and image
prompts.py   prompt images (folders or held-out shard rings) -> preprocessed EvalPrompt
metrics/     QIS, CLIP(TX), CLIP(IM), PSNR, SSIM, LPIPS and their summary statistics
leakage.py   refuses (or flags) evaluation objects that are in the training shards
report.py    self-contained HTML report (index.html + images/ + results.json), W&B logging
evaluate.py  the Hydra entry point behind `make eval`
"""
