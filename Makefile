# The project's commands. `make test` and `make demo` work on a fresh clone (they install first).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: install test demo bench ablation clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch/torchvision pinned first: these exact builds are the ones the project is tested with.
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q tests

# The default end-to-end run on easy-VQA (scripts/demo.py): detector, features, pretraining, VQA, report.
demo: install
	$(PY) scripts/demo.py

.PHONY: demo-gqa demo-nlvr2
# The same pretrained model fine-tuned on easy-VQA in GQA's format (official GQA figures), or on an NLVR2-format
# pair task of easy-VQA images (official accuracy and consistency, beside a text-only baseline); added to the report.
demo-gqa: install
	$(PY) scripts/demo.py --task gqa

demo-nlvr2: install
	$(PY) scripts/demo.py --task nlvr2

# Does pretraining matter? Fine-tunes on 10% of easy-VQA's questions from the demo's pretrained model and from
# scratch (scripts/ablation.py; runs the demo's earlier stages first when they are missing).
ablation: install
	$(PY) scripts/ablation.py

# Speed and memory figures: each benchmark prints a table (see benchmarks/README.md).
bench: install
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
