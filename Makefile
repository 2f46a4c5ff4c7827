# The project's commands. `make test` and `make demo` work on a fresh clone (they install first).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: install lint test demo bench ablation lock clean

# Every dependency at the exact version in constraints.txt (the versions make test was run with).
$(VENV)/.installed: setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# Style and static checks (config in pyproject.toml); `make format` applies the fixes ruff can make.
lint: install
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .

format: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

test: install
	$(PY) -m pytest -q tests

# The default end-to-end run on easy-VQA (scripts/demo.py): detector, features, pretraining, VQA, report.
demo: install
	$(PY) scripts/demo.py

.PHONY: demo-gqa demo-nlvr2 compare
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

# LXMERT, VisualBERT and ViLBERT at matched parameter counts: same features, pretraining and fine-tuning recipes,
# 3 seeds, on easy-VQA and the NLVR2-format pair task (scripts/compare_architectures.py; table in runs/compare/).
compare: install
	$(PY) scripts/compare_architectures.py

# Speed and memory figures: each benchmark prints a table (see benchmarks/README.md).
bench: install
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

# Refresh constraints.txt: resolve setup.cfg's ranges afresh (newest allowed versions) in a scratch venv and
# write what got installed. Then `make clean test`: the lock should name versions that were tested.
LOCK_VENV := .lock-venv
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install -q '.[dev]'
	{ sed -n '/^#/p' constraints.txt; $(LOCK_VENV)/bin/python -m pip freeze --all | grep -viE '^(lxmert-repro|pip)=='; } > constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt
	rm -rf $(LOCK_VENV) build *.egg-info

clean:
	rm -rf $(VENV) build *.egg-info
