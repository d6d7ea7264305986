# Two commands set everything up: `make demo` runs the pipeline, `make test` runs the tests.
# Both create .venv when it is missing and reinstall only when a requirements file changed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements.sha256
PROFILE ?= demo
ARGS ?=

.PHONY: demo test smoke ablations env clean-venv gpu-check gpu-train gpu-wheels cells

env:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if ! sha256sum requirements.txt requirements-dev.txt | cmp -s - $(STAMP); then \
		echo "installing requirements into $(VENV) (first time: a few minutes)"; \
		$(PY) -m pip install --quiet --upgrade pip && \
		$(PY) -m pip install --quiet -r requirements-dev.txt && \
		sha256sum requirements.txt requirements-dev.txt > $(STAMP); \
	fi

demo: env
	$(PY) -m utils.pipeline --profile $(PROFILE) $(ARGS)

smoke: env
	$(PY) -m utils.pipeline --profile smoke $(ARGS)

# Notebook 07 (not in the default chain): the paper's ablation tables and the robustness curves.
ablations: env
	$(PY) -m utils.pipeline --profile $(PROFILE) --steps 07 $(ARGS)

# pytest exits 5 when it collects no test: not a failure of the code.
# The notebooks' parameters cells and preludes, written from utils/core/config.py.
cells: env
	$(PY) -m utils.pipeline.cells $(ARGS)

test: env
	@$(PY) -m pytest $(ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

# One call on a GPU machine: training-step, loader, DDP and smoke-chain figures in outputs/gpu-check/<date>/.
# Without a GPU it runs at a tiny scale on the CPU. On a machine without the packages (and no internet), build the
# wheel folder here first (make gpu-wheels) and carry dist/gpu-wheels: the check installs from it.
GPU_PYTHON ?= python3
gpu-check:
	@if [ -d dist/gpu-wheels ]; then $(GPU_PYTHON) -m utils.bench.gpu --wheels dist/gpu-wheels $(ARGS); \
	else $(GPU_PYTHON) -m utils.bench.gpu $(ARGS); fi

# One call on a GPU machine, within MINUTES (default 8): the training step with each speed change, the kaggle batch
# under a T4's memory, and steps 00-05 trained on the GPU: outputs/gpu-train/<date>/. Tiny on a CPU.
MINUTES ?= 8
gpu-train:
	@if [ -d dist/gpu-wheels ]; then $(GPU_PYTHON) -c "from pathlib import Path; \
		from utils.pipeline.kaggle import ensure_packages; print(ensure_packages(wheels=Path('dist/gpu-wheels')))"; fi
	$(GPU_PYTHON) -m utils.bench.gpu_train --minutes $(MINUTES) $(ARGS)

gpu-wheels: env
	$(PY) -m utils.pipeline.kaggle gpu-wheels --out dist/gpu-wheels $(ARGS)

clean-venv:
	rm -rf $(VENV)

# Kaggle: upload-ready folders (see the README's Kaggle section).
KAGGLE_USER ?=
.PHONY: kaggle-code kaggle-wheels kaggle-weights kaggle-rehearsal
# dist/kaggle-code (the code dataset, with its version) and dist/kaggle-kernel (the runner and its metadata)
kaggle-code: env
	$(PY) -m utils.pipeline.kaggle code --out dist/kaggle-code --user "$(KAGGLE_USER)"
	$(PY) -m utils.pipeline.kaggle kernel --out dist/kaggle-kernel --user "$(KAGGLE_USER)"

kaggle-wheels: env
	$(PY) -m utils.pipeline.kaggle wheels --out dist/kaggle-wheels --user "$(KAGGLE_USER)"

kaggle-weights: env
	$(PY) -m utils.pipeline.kaggle weights --out dist/kaggle-weights --user "$(KAGGLE_USER)"

# The README's Kaggle commands, then the runner on a stand-in for Kaggle's image (Python 3.12), offline, to the
# submission and the Grad-CAM report: outputs/kaggle-rehearsal/<date>/results.md (about 15 minutes; CI runs it).
kaggle-rehearsal: env
	$(PY) -m utils.pipeline.rehearsal
