# Two commands matter on a fresh machine: `make demo` and `make test`. Both install first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
DEMO ?= demo
WORKERS ?= 2

.PHONY: install test demo bench clean

# torch is pinned through constraints.txt (a local CPU wheel here); pyproject.toml stays loose.
$(INSTALLED): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

install: $(INSTALLED)

test: $(INSTALLED)
	$(BIN)/pytest

demo: $(INSTALLED)
	$(BIN)/vidlayer synth $(DEMO)/synth --n 6 --seed 0
	$(BIN)/vidlayer build --input $(DEMO)/synth/raw --output $(DEMO)/build --workers $(WORKERS)
	$(BIN)/vidlayer inspect $(DEMO)/build/shards/shard-000000.tar --render $(DEMO)/contact-sheet.png
	@echo
	@echo "raw clips:      $(DEMO)/synth/raw (ground truth in $(DEMO)/synth/gt)"
	@echo "shards:         $(DEMO)/build/shards"
	@echo "manifest:       $(DEMO)/build/manifest.parquet"
	@echo "contact sheet:  $(DEMO)/contact-sheet.png"

bench: $(INSTALLED)
	$(BIN)/python bench/bench_build.py

clean:
	rm -rf $(DEMO) bench/out
