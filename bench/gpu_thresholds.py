"""What `make gpu-check` trains and the bars it must clear: bench.gpu_check measures against
them, bench.gpu_report prints them beside the figures."""

VARIANTS = ("pixel", "local_pixel")
MIN_IOU = 0.85  # camera/alpha check, every view of every ring
MIN_PSNR_DB = 30.0  # GPU against CPU render of the same ring (Cycles' noise differs by device)
MAX_LOSS_REL = 1e-4  # fp32 loss of step 1, GPU against CPU
MAX_SAMPLE_REL = 1e-3  # fp32 latents after one DDIM step, GPU against CPU
