# The README's two set-up commands are `make demo` and `make test`; both work from a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
QGIS_PACKAGES = python3-qgis qgis-providers qgis

.PHONY: demo test install qgis plugin sample screenshot clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c "import ensurepip" 2>/dev/null || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends python3-venv >/dev/null; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@

# Real QGIS for the plugin tests (Debian's packages; headless).
qgis:
	@dpkg -s $(QGIS_PACKAGES) >/dev/null 2>&1 || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(QGIS_PACKAGES) >/dev/null; }

test: install qgis
	$(BIN)/pytest -q

demo: install
	$(BIN)/mamol-map --model sample_data/sample_model.safetensors \
	    --hsi sample_data/hsi.tif --lidar sample_data/dsm.tif -o sample_data/landcover.tif --availability
	@echo "map: sample_data/landcover.tif; picture: sample_data/landcover_quicklook.png"

plugin: install
	$(BIN)/python scripts/build_plugin.py dist

# Regenerate the bundled sample (scene and model); `make screenshot` redraws the README's pictures.
sample: install
	$(BIN)/python scripts/make_sample_data.py sample_data

screenshot: install qgis
	$(BIN)/python scripts/qgis_screenshot.py docs

clean:
	rm -rf $(VENV) dist
