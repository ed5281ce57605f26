"""Evaluation of a trained or converted ImageDream model (SPEC 6-7).

evaluate.py      the Hydra entry point behind `make eval` (config: config.py, conf/eval.yaml)
checkpoints.py   what `checkpoint=` may point at: export folder, run folder, released .pt
prompts.py       prompt images (folders or held-out shard rings) -> preprocessed EvalPrompt;
                 unusable files skipped as PromptProblem, prompts without alpha flagged
matting.py       optional background removal with a local segmentation model
sampler.py       batches prompts through training.pipeline.ImageDreamPipeline (SPEC 6)
metrics/         QIS, CLIP(TX), CLIP(IM), PSNR, SSIM, LPIPS, their networks and statistics
leakage.py       refuses (or flags) evaluation objects that are in the training shards
results.py       the result dataclasses; report.py renders them (HTML folder, W&B)
make_default_prompts.py   draws the shipped default_prompts/
"""
