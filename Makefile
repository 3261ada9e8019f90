# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= configs/bce.flags
MODEL_DIR ?= runs/bce
BENCH_OUT ?= bench
ARGS ?=

.PHONY: run test bench install clean

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

# pytest exits 5 when it collects no test: that is a failure here, not a pass.
test: $(STAMP)
	$(PY) -m pytest -q; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$status

bench: $(STAMP)
	FUZZ_EXAMPLES=300 $(PY) -m pytest -q tests/test_fuzz.py --hypothesis-show-statistics
	$(PY) -m dssm_tf.speed $(ARGS)
	$(PY) -m dssm_tf.scaling --out=$(BENCH_OUT)/scaling
	$(PY) -m dssm_tf.benchmark --out=$(BENCH_OUT) $(ARGS)

clean:
	rm -rf $(VENV) runs $(BENCH_OUT) *.egg-info
