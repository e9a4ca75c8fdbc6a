# Two commands matter on a fresh machine: `make demo` and `make test`. Both install first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
DEMO ?= demo
WORKERS ?= 2

PRESET ?= tiny
RUNS ?= runs
# DATA, OUT, INIT, CONFIG and SET (space-separated key=value) override a stage config when given.
TRAIN_ARGS = --preset $(PRESET) $(if $(DATA),--data $(DATA)) $(if $(OUT),--out $(OUT)) \
	$(if $(INIT),--set init=$(INIT)) $(foreach s,$(SET),--set $(s))
PROMPT ?= a red ball bounces across a wooden table in a sunny kitchen
FG ?= a red ball bouncing
BG ?= a wooden table in a sunny kitchen

.PHONY: install test demo bench bench-scale bench-quality bench-inpaint-fill calibrate-gate bench-models bench-model repro-toy train-stage1 train-stage2 train-stage3 sample clean

# torch is pinned through constraints.txt (a local CPU wheel here); pyproject.toml stays loose.
# SAM2 goes in without its dependencies: the only torchvision on this registry is a CUDA build that
# cannot load beside a CPU torch, and SAM2's video predictor does not use torchvision.
$(INSTALLED): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	$(BIN)/python -m pip install --quiet -c constraints.txt "hydra-core>=1.3.2" "iopath>=0.1.10"
	SAM2_BUILD_CUDA=0 $(BIN)/python -m pip install --quiet --no-build-isolation --no-deps -c constraints.txt "sam2==1.1.0"
	touch $@

install: $(INSTALLED)

test: $(INSTALLED)
	$(BIN)/pytest

demo: $(INSTALLED)
	$(BIN)/vidlayer synth $(DEMO)/synth --n 6 --seed 0
	$(BIN)/vidlayer build --input $(DEMO)/synth/raw --output $(DEMO)/build --workers $(WORKERS)
	$(BIN)/vidlayer inspect $(DEMO)/build/shards/shard-000000.tar --render $(DEMO)/contact-sheet.png
	$(BIN)/vidlayer eval --pred $(DEMO)/build --gt $(DEMO)/synth --report $(DEMO)/eval.html
	@echo
	@echo "raw clips:      $(DEMO)/synth/raw (ground truth in $(DEMO)/synth/gt)"
	@echo "shards:         $(DEMO)/build/shards"
	@echo "manifest:       $(DEMO)/build/manifest.parquet"
	@echo "contact sheet:  $(DEMO)/contact-sheet.png"
	@echo "evaluation:     $(DEMO)/eval.html (layers against the ground truth)"

bench: $(INSTALLED)
	$(BIN)/python bench/bench_build.py

# Orchestration at 10K, 50K and 200K inputs (no clip work): driver rate, memory, journal, resume, manifest -> bench/out/scale/
bench-scale: $(INSTALLED)
	$(BIN)/python bench/bench_scale.py $(ARGS)

# The default pipeline and its quality gate against ground truth (synth, hard synth, DAVIS, composites) -> bench/out/quality/
bench-quality: $(INSTALLED)
	$(BIN)/python bench/bench_quality.py $(ARGS)

# Never-seen background fills (PatchMatch, xphoto shift-map/FSR, Telea, Navier-Stokes) on real frames -> bench/out/inpaint_fill/
bench-inpaint-fill: $(INSTALLED)
	$(BIN)/python bench/bench_inpaint_fill.py $(ARGS)

# Refit the quality gate's model on synthetic clips of tuning seeds -> vidlayer/gate_calibration.json
calibrate-gate: $(INSTALLED)
	$(BIN)/python bench/calibrate_gate.py $(ARGS)

# The models pipeline (tiny random checkpoints unless ARGS="--set ...") against the default -> bench/out/models/
bench-models: $(INSTALLED)
	$(BIN)/python bench/bench_models.py $(ARGS)

# Layered vs plain Wan transformer training step; e.g. make bench-model ARGS="--preset wan2.1-t2v-1.3b --device cuda"
bench-model: $(INSTALLED)
	$(BIN)/python bench/bench_model.py $(ARGS)

# The paper's ablations on the toy domain (every variant x 3 seeds) -> docs/RESULTS.md; SET="seeds=[0] ..." overrides
repro-toy: $(INSTALLED)
	$(BIN)/vidlayer repro-toy $(foreach s,$(SET),--set $(s))

train-stage1: $(INSTALLED)
	$(BIN)/vidlayer train $(or $(CONFIG),model/configs/stage1.yaml) $(TRAIN_ARGS)

train-stage2: $(INSTALLED)
	$(BIN)/vidlayer train $(or $(CONFIG),model/configs/stage2.yaml) $(TRAIN_ARGS)

train-stage3: $(INSTALLED)
	$(BIN)/vidlayer train $(or $(CONFIG),model/configs/stage3.yaml) $(TRAIN_ARGS)

sample: $(INSTALLED)
	$(BIN)/vidlayer sample --run $(or $(RUN),$(RUNS)/stage3) --out $(or $(OUT),$(RUNS)/sample) \
		--prompt "$(PROMPT)" --fg "$(FG)" --bg "$(BG)" --frames 9 --height 64 --width 64 --steps 20

clean:
	rm -rf $(DEMO) bench/out $(RUNS)
