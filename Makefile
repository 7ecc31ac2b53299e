# Two commands a new user needs (see README): `make report` and `make test`.
# Both build .venv on first use. torch is installed first, pinned to the CPU build
# (torch==2.13.0) so that no dependency resolution can pull a multi-GB CUDA build.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: venv report test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

venv: $(STAMP)

report: $(STAMP)
	$(PY) -m glminterp run mnist_gap_cnn

test: $(STAMP)
	$(PY) -m pytest -n 2 -q

lint: $(STAMP)
	$(PY) -m ruff check glminterp tests analyses benchmarks

bench: $(STAMP)
	for f in benchmarks/*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) reports/*/ .pytest_cache
