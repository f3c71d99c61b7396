# The two commands of the README. Each creates or updates .venv and installs
# everything from this project's own files.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test venv bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m atoll.demo

# pytest exits 5 when it collected nothing: report that as a failure, not silence.
test: $(STAMP)
	$(PY) -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: no tests were collected" >&2; exit 1; fi; exit $$rc

# Flower pins its own rich/typer/protobuf: it gets a venv of its own, and the
# horizontal benchmark runs its Flower side with that interpreter.
FLOWER_VENV := .venv-flower

$(FLOWER_VENV)/.installed: benchmarks/requirements-flower.txt
	test -x $(FLOWER_VENV)/bin/python || $(PYTHON) -m venv $(FLOWER_VENV)
	$(FLOWER_VENV)/bin/python -m pip install --quiet -r benchmarks/requirements-flower.txt
	touch $@

# SecretFlow (SPU) needs Python 3.10 and pins its own jax: a venv of its own for benchmarks/mpc.py;
# when it cannot be made the benchmark skips its SPU side and says so.
SPU_PYTHON ?= /root/.pyenv/versions/3.10.13/bin/python
SPU_VENV := .venv-spu

$(SPU_VENV)/.installed:
	-( test -x $(SPU_VENV)/bin/python || $(SPU_PYTHON) -m venv $(SPU_VENV) ) && \
	  $(SPU_VENV)/bin/python -m pip install --quiet secretflow-lite==1.13.0b0 && touch $@ || \
	  echo "make bench: SecretFlow venv not made; benchmarks/mpc.py will skip SPU" >&2

bench: $(STAMP) $(FLOWER_VENV)/.installed $(SPU_VENV)/.installed
	$(PY) -m pip install --quiet -e '.[test,bench]'
	for b in benchmarks/[a-z]*.py; do \
	  extra=""; [ $$b = benchmarks/horizontal.py ] && extra="--flower-python $(FLOWER_VENV)/bin/python"; \
	  [ $$b = benchmarks/mpc.py ] && extra="--spu-python $(SPU_VENV)/bin/python"; \
	  $(PY) $$b --quick $$extra || exit 1; done

clean:
	rm -rf $(VENV) $(FLOWER_VENV) $(SPU_VENV) build *.egg-info
