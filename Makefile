# Two commands do all the set-up: `make demo` and `make test`.
# Torch is installed first, on its own, so that pip never resolves it to the multi-GB CUDA
# build on a machine without CUDA: CPU wheel there (a local wheel if pip's find-links has one,
# else PyTorch's CPU index); the default build where `nvidia-smi` finds a GPU.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
CACHE ?= .cache/specplan
STAMP := $(VENV)/.specplan-installed

.PHONY: setup demo test test-all bench clean

setup: $(STAMP)

$(STAMP): setup.cfg Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if $(PY) -c "import torch" 2>/dev/null; then echo "torch already installed"; \
	elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		$(PY) -m pip install -q "torch>=2.3"; \
	else \
		$(PY) -m pip install -q "torch==$(TORCH_VERSION)" 2>/dev/null \
		|| $(PY) -m pip install -q torch --index-url $(TORCH_CPU_INDEX); \
	fi
	$(PY) -m pip install -q -e ".[dev]"
	@if ! command -v pg_ctl >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then \
		(command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
		|| echo "PostgreSQL not installed: its tests will be skipped"; \
	fi
	touch $@

# The held-out legal task is scored on the chosen model beside its perplexity.
demo: $(STAMP)
	$(VENV)/bin/specplan --cache $(CACHE) data demo > /dev/null
	$(VENV)/bin/specplan --cache $(CACHE) data task $(CACHE)/demo/legal.jsonl \
		--out $(CACHE)/demo/legal_task.jsonl
	$(VENV)/bin/specplan --cache $(CACHE) plan --demo --task legal=$(CACHE)/demo/legal_task.jsonl \
		--out runs/demo

# Two test processes (one file each at a time): the suite's tiny models use one thread each.
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile

test-all: $(STAMP)
	$(PY) -m pytest -q -m "not gpu"

bench: $(STAMP)
	$(PY) benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) $(CACHE) runs
