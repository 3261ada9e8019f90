# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= configs/bce.flags
MODEL_DIR ?= runs/bce
BENCH_OUT ?= bench
ARGS ?=

.PHONY: run test lint bench install clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Trains CONFIG on MovieLens-1M. When it is missing and cannot be downloaded, says so in one
# line and runs the same job on a synthetic data set (python -m dssm_tf.synthetic
# $(SYNTHETIC_FLAGS)), its figures under a SYNTHETIC DATA banner: see scripts/make_run.sh.
SYNTHETIC_FLAGS ?= --preset=movielens-1m-size
run: $(STAMP)
	sh scripts/make_run.sh $(PY) $(CONFIG) $(MODEL_DIR) '$(SYNTHETIC_FLAGS)' $(ARGS)

# pytest exits 5 when it collects no test: that is a failure here, not a pass. Tests marked
# `bench` (end-to-end harness runs, long drills) run in `make bench` instead.
test: $(STAMP)
	$(PY) -m pytest -q -m "not bench" --durations=15; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$status

# Ruff (pycodestyle, pyflakes, in-function imports; 100 columns: pyproject.toml) on the tree,
# and mypy on the two modules whose types are the users' contract. CI runs it before the tests.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy --ignore-missing-imports --follow-imports=silent dssm_tf/config.py \
		dssm_tf/serving/contract.py

# The measurement harness lives in benchmarks/ of the source tree (not in the dssm_tf package).
bench: $(STAMP)
	$(PY) -m pytest -q -m bench --durations=15
	FUZZ_EXAMPLES=300 $(PY) -m pytest -q tests/test_fuzz.py --hypothesis-show-statistics
	$(PY) -m benchmarks.speed $(ARGS)
	$(PY) -m benchmarks.scaling --out=$(BENCH_OUT)/scaling
	$(PY) -m benchmarks.benchmark --out=$(BENCH_OUT) $(ARGS)

clean:
	rm -rf $(VENV) runs $(BENCH_OUT) *.egg-info
