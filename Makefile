# ImageDream pipeline. Hydra overrides are passed as make variables:
#   make render source=local source.root=DIR output_dir=OUT
#   make train controller=pixel data.shards='OUT/shards/shard-{00000..00003}.tar' trainer.max_steps=1000
#   make eval checkpoint=runs/NAME/export prompts=DIR
# Upper-case variables below are make's own knobs, not Hydra overrides.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
NPROC ?= 1
ARGS ?=
PYTEST_ARGS ?=
DEMO_DIR ?= outputs/demo
ASSETS ?= $(abspath ../shared/assets)
BENCH ?= quick
GPU_CHECK_OUT ?= bench/results
OFFICIAL_IMAGEDREAM ?=
OFFICIAL_MVDREAM ?=
MAKE_KNOBS := VENV PY NPROC ARGS PYTEST_ARGS DEMO_DIR ASSETS BENCH GPU_CHECK_OUT OFFICIAL_IMAGEDREAM OFFICIAL_MVDREAM
# Every other variable given on the command line becomes a quoted Hydra override.
OVERRIDES = $(strip $(foreach v,$(filter-out $(MAKE_KNOBS),$(.VARIABLES)),$(if $(filter command line,$(origin $(v))),'$(v)=$($(v))'))) $(ARGS)

export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export DS_BUILD_OPS ?= 0
export IMAGEDREAM_ASSETS ?= $(ASSETS)

STAMP := $(VENV)/.installed

.PHONY: help install demo render train eval test test-fast fuzz lint format bench bench-render-quality bench-learn gpu-check parity clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  \033[36m%-21s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  Hydra overrides go as VAR=value (e.g. make train controller=pixel trainer.max_steps=10)."
	@echo "  Knobs: NPROC=N (training processes here), ARGS='raw hydra args' (bench-learn, parity: their flags), BENCH=quick|full, GPU_CHECK_OUT=DIR (gpu-check's report),"
	@echo "         OFFICIAL_IMAGEDREAM=DIR OFFICIAL_MVDREAM=DIR (parity: checkouts of bytedance/ImageDream and bytedance/MVDream)."

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the pinned dependencies (once)

demo: $(STAMP) ## Whole job on the built-in example: render, train the demo model (~10 min), evaluate
	$(PY) -m data_pipeline.job source=builtin output_dir=$(DEMO_DIR)/render render=demo
	$(PY) -m training.train experiment=demo 'data.shards=$(DEMO_DIR)/render/shards' run_dir=$(DEMO_DIR)/train
	$(PY) -m evaluation.evaluate eval_experiment=demo checkpoint=$(DEMO_DIR)/train/export 'heldout_shards=$(DEMO_DIR)/render/shards' output_dir=$(DEMO_DIR)/eval
	@echo "Demo done: shards in $(DEMO_DIR)/render/shards, model in $(DEMO_DIR)/train, report at $(DEMO_DIR)/eval/index.html"

render: $(STAMP) ## Render a source into WebDataset shards with Ray (conf/render.yaml)
	$(PY) -m data_pipeline.job $(OVERRIDES)

train: $(STAMP) ## Train one variant with DeepSpeed (conf/train.yaml); NPROC=2 for two processes
ifeq ($(NPROC),1)
	$(PY) -m training.train $(OVERRIDES)
else
	$(VENV)/bin/torchrun --standalone --nproc_per_node $(NPROC) -m training.train $(OVERRIDES)
endif

eval: $(STAMP) ## Sample and score a model, write the HTML report (conf/eval.yaml)
	$(PY) -m evaluation.evaluate $(OVERRIDES)

test: $(STAMP) ## Run every test, slow end-to-end ones included (what CI runs)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP) ## Run the tests without the slow end-to-end ones
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

fuzz: $(STAMP) ## Longer fuzzing of the asset inspectors, shard reader and prompt loader (FUZZ_EXAMPLES=2000)
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-2000} $(PY) -m pytest -o timeout=3600 tests/data_pipeline/test_fuzz.py tests/evaluation/test_fuzz_prompts.py $(PYTEST_ARGS)

lint: $(STAMP) ## ruff lint + format check, mypy on our packages, the package direction (lint-imports)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy contract data_pipeline training evaluation bench
	$(VENV)/bin/lint-imports

format: $(STAMP) ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(STAMP) ## Benchmarks into bench/results/ (BENCH=full: SPEC render settings, over an hour)
	$(PY) -m bench.render $(if $(filter full,$(BENCH)),,--quick)
	$(PY) -m bench.shards
	$(PY) -m bench.model $(if $(filter full,$(BENCH)),,--quick)
	$(PY) -m bench.train
	$(PY) -m bench.resume
	$(PY) -m bench.eval
	$(PY) -m bench.pipeline

gpu-check: $(STAMP) ## GPU paths measured (render, DeepSpeed training, sampling); without a GPU: tiny, on the CPU
	$(PY) -m bench.gpu_check --out $(GPU_CHECK_OUT)

bench-render-quality: $(STAMP) ## Render settings: seconds per view against PSNR/SSIM to a 1024 spp reference (BENCH=quick: minutes; full: about 20 min, 10 once its references are cached)
	$(PY) -m bench.render_quality $(if $(filter full,$(BENCH)),,--quick)

bench-learn: $(STAMP) ## Train every controller variant on the procedural family, compare (about an hour)
	$(PY) -m bench.learn $(ARGS)

parity: $(STAMP) ## Our pipeline against the authors' inference code, stage by stage (OFFICIAL_IMAGEDREAM=DIR OFFICIAL_MVDREAM=DIR)
	@if [ -z "$(OFFICIAL_IMAGEDREAM)" ] || [ -z "$(OFFICIAL_MVDREAM)" ]; then \
	  echo "make parity needs OFFICIAL_IMAGEDREAM=DIR and OFFICIAL_MVDREAM=DIR: checkouts of bytedance/ImageDream and bytedance/MVDream"; exit 2; fi
	$(PY) -m bench.parity --imagedream $(OFFICIAL_IMAGEDREAM) --mvdream $(OFFICIAL_MVDREAM) $(ARGS)

clean: ## Remove outputs, runs and caches (keeps .venv)
	rm -rf outputs runs wandb .pytest_cache .ruff_cache .mypy_cache
