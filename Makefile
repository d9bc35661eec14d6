# The two set-up commands of the README: `make demo` and `make test`. Both start from a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test install sample clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

test: install
	$(BIN)/pytest -q

demo: install
	$(BIN)/python scripts/make_sample_data.py sample_data/scene
	$(BIN)/mamol-train --scene sample_data/scene --backbone tiny --patch-size 7 --epochs 30 --missing-rate 0.5 \
	    --device auto -o sample_data/demo_model.safetensors

clean:
	rm -rf $(VENV) runs
