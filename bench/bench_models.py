"""Model-backed pipeline against the weights-free default: clips per minute overall and per stage.

Builds the same `vidlayer synth` clips with `pipelines/default.yaml` and `pipelines/models.yaml`
side by side in one run, on Ray with --workers CPU workers; the model stages get GPU actors where
the cluster has GPUs and run on CPUs where it has none. Without --set, the models are tiny random
checkpoints (the plumbing's cost, not a real model's); point them at real weights with e.g.
--set caption.model=/models/Qwen2.5-VL-7B-Instruct. Both runs open the quality gate, so that both
write every clip. Figures go to the console and bench/out/models.json.

    python bench/bench_models.py [--clips 6] [--workers 2] [--set stage.param=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from vidlayer.build import build
from vidlayer.config import load_pipeline
from vidlayer.random_models import OPEN_QUALITY_GATE, tiny_models_overrides
from vidlayer.synth import synthesize

OUT = Path(__file__).resolve().parent / "out" / "models"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="override of the models pipeline")
    args = parser.parse_args()
    console = Console()
    raw = OUT / "synth" / "raw"
    if len(list(raw.glob("*.mp4"))) != args.clips:
        shutil.rmtree(OUT / "synth", ignore_errors=True)
        synthesize(OUT / "synth", args.clips, seed=100, seconds=args.seconds, progress=False)
    models = tiny_models_overrides(OUT / "checkpoints") + args.overrides
    pipelines = {"default": load_pipeline("default", OPEN_QUALITY_GATE), "models": load_pipeline("models", models)}
    results = {}
    for name, pipeline in pipelines.items():
        out = OUT / f"build-{name}"
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        summary = build(raw, out, pipeline, workers=args.workers, executor="ray", console=Console(quiet=True))
        seconds = time.perf_counter() - start
        results[name] = {"seconds": seconds, "clips_per_minute": args.clips / seconds * 60,
                         "written": summary.inputs.get("written", 0), "stage_clips_per_minute": summary.stage_rates}
    table = Table(title=f"{args.clips} clips (480p x 49 frames), --workers {args.workers}, {os.cpu_count()} cores: "
                        "clips per minute each stage's workers manage")
    table.add_column("stage")
    for name in pipelines:
        table.add_column(name, justify="right")
    for spec in pipelines["models"].stages:
        cells = [results[name]["stage_clips_per_minute"].get(spec.stage) for name in pipelines]
        backends = " / ".join(dict.fromkeys(p.spec(spec.stage).backend for p in pipelines.values()
                                            if spec.stage in [s.stage for s in p.stages]))
        table.add_row(f"{spec.stage} ({backends})", *("-" if c is None else f"{c:,.1f}" for c in cells))
    table.add_row("[bold]whole build", *(f"[bold]{results[name]['clips_per_minute']:.2f}" for name in pipelines))
    console.print(table)
    ratio = results["default"]["clips_per_minute"] / results["models"]["clips_per_minute"]
    console.print(f"default / models whole-build throughput: {ratio:.2f}x "
                  f"(written: default {results['default']['written']}, models {results['models']['written']})")
    (OUT / "models.json").write_text(json.dumps({"cores": os.cpu_count(), "clips": args.clips, **results}, indent=2))


if __name__ == "__main__":
    main()
