"""The `vidlayer` command. Thin: each command parses its options and calls one function."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vidlayer.config import PipelineError, load_pipeline

app = typer.Typer(help="Build layered video datasets (full, background, foreground + alpha) from raw clips.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console()
errors = Console(stderr=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    """One clear line on stderr and a non-zero exit."""
    errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
              "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str) -> int:
    """Bytes in `1GB`, `500 MB`, `2GiB` or `123456`."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).lower() not in SIZE_UNITS or float(match.group(1)) <= 0:
        raise fail(f"size {text!r}: give a positive number with a unit, e.g. 1GB, 500MB or 2GiB")
    return int(float(match.group(1)) * SIZE_UNITS[match.group(2).lower()])


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write OUT/raw (clips + captions) and OUT/gt (true layers); "
                                             "with --toy, OUT/train and OUT/test shards.")],
    n: Annotated[int, typer.Option("--n", help="Number of clips (with --toy: training samples).")] = 8,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same clips.")] = 0,
    width: Annotated[int, typer.Option(help="Frame width (even).")] = 854,
    height: Annotated[int, typer.Option(help="Frame height (even).")] = 480,
    fps: Annotated[Optional[float], typer.Option(help="Frame rate [default: 24, with --toy 16].")] = None,
    seconds: Annotated[float, typer.Option(help="Clip length.")] = 4.0,
    toy: Annotated[bool, typer.Option("--toy", help="Write training shards of the toy domain (shapes over "
                                                    "textures, true layers, a held-out test split) instead.")] = False,
    n_test: Annotated[Optional[int], typer.Option("--n-test", help="With --toy: test samples, all with held-out "
                                                  "attribute pairs [default: a tenth of --n, at least 1].")] = None,
    frames: Annotated[int, typer.Option(help="With --toy: frames per sample.")] = 17,
    size: Annotated[int, typer.Option(help="With --toy: frame width and height (even).")] = 64,
    shard_size: Annotated[int, typer.Option(help="With --toy: samples per shard.")] = 500,
    hard: Annotated[bool, typer.Option("--hard", help="Hard clips, cycling through a camera tracking the subject, "
                                                      "a near background plane with parallax, a near-static "
                                                      "subject and a subject entering late "
                                                      "(keys synth-hard-SEED-INDEX).")] = False,
) -> None:
    """Make synthetic raw clips from real photographs, with their ground-truth layers kept beside them.

    With --hard, stage what real footage does to weights-free layering (see `synth.HARD_MODES`).
    With --toy, write layered training shards directly: flat shapes moving over drifting textures,
    captioned per layer, with a test split of attribute combinations that training never shows."""
    if toy and hard:
        raise fail("--hard applies to the photo clips, not to --toy")
    if toy:
        from vidlayer.toy import DEFAULT_FPS, write_toy_dataset

        test = max(1, n // 10) if n_test is None else n_test
        try:
            dataset = write_toy_dataset(out, n, test, seed, frames=frames, size=size,
                                        fps=DEFAULT_FPS if fps is None else fps, shard_size=shard_size)
        except (ValueError, FileExistsError) as e:
            raise fail(str(e)) from None
        for split, count in dataset.samples.items():
            console.print(f"{split}: {count} samples in {len(dataset.shards.get(split, []))} shards "
                          f"under [bold]{out / split}[/]")
        return
    from vidlayer.synth import synthesize

    try:
        keys = synthesize(out, n, seed, width=width, height=height, fps=24.0 if fps is None else fps, seconds=seconds,
                          hard=hard)
    except ValueError as e:
        raise fail(str(e)) from None
    console.print(f"wrote {len(keys)} clips to [bold]{out / 'raw'}[/] and their ground truth to [bold]{out / 'gt'}[/]")


@app.command()
def build(
    input: Annotated[Path, typer.Option("--input", "-i", help="Folder of videos with NAME.txt/NAME.json captions, "
                                        "or a csv/jsonl/parquet manifest with path and caption columns.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder (shards/, manifest.parquet).")],
    workers: Annotated[int, typer.Option(help="Clips processed in parallel.")] = os.cpu_count() or 1,
    pipeline: Annotated[str, typer.Option(help="Pipeline YAML, or a shipped one: default (weights-free, CPU) or models "
                                                     "(grounding, SAM 2, VLM captions; set their weights, see README).")] = "default",
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override a pipeline value: "
                                                      "stage.param=value (repeatable).")] = None,
    ray_address: Annotated[Optional[str], typer.Option(help="Join this Ray cluster instead of starting a local one.")] = None,
    executor: Annotated[str, typer.Option(help="ray, or inline (one process, for debugging).")] = "ray",
    input_root: Annotated[Optional[Path], typer.Option(help="Folder that manifest paths are relative to and may not "
                                                       "leave (default: the manifest's folder).")] = None,
    part: Annotated[Optional[str], typer.Option(help="I/N: build only the inputs of part I of N, so that N drivers "
                                                "(machines) share one --output; each part resumes on its own.")] = None,
    shard_size: Annotated[Optional[str], typer.Option(help="Close a shard once it reaches this size, e.g. 1GB or "
                                                      "500MB (pipeline output.shard_max_bytes).")] = None,
    shard_samples: Annotated[Optional[int], typer.Option(help="Samples per shard at most (pipeline "
                                                         "output.shard_max_samples).")] = None,
    stall_timeout: Annotated[float, typer.Option(help="Seconds without any finished input after which the inputs "
                                                 "still out are failed (reason timeout) and the build ends.")] = 1800.0,
) -> None:
    """Turn raw caption-video pairs into layered WebDataset shards. Re-run the same command to resume."""
    from vidlayer.build import BuildError, Part
    from vidlayer.build import build as run_build
    from vidlayer.io.inputs import InputError

    if workers < 1:
        raise fail("--workers must be at least 1")
    if stall_timeout <= 0:
        raise fail("--stall-timeout must be positive")
    overrides = list(set_ or [])
    if shard_size is not None:
        overrides.append(f"output.shard_max_bytes={parse_size(shard_size)}")
    if shard_samples is not None:
        overrides.append(f"output.shard_max_samples={shard_samples}")
    try:
        spec = load_pipeline(pipeline, overrides)
        summary = run_build(input, output, spec, workers=workers, executor=executor, ray_address=ray_address,
                            input_root=input_root, console=errors, part=Part.parse(part) if part else None,
                            stall_timeout=stall_timeout)
    except (PipelineError, InputError, BuildError) as e:
        raise fail(str(e)) from None
    except KeyboardInterrupt:
        raise fail(f"interrupted; what finished is committed in {output}: re-run the same command to resume",
                   code=130) from None
    table = Table(title=f"build of {summary.output}", show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("inputs", ", ".join(f"{v} {k}" for k, v in sorted(summary.inputs.items())) or "none")
    table.add_row("samples", ", ".join(f"{v} {k}" for k, v in sorted(summary.samples.items())) or "none")
    if summary.reasons:
        table.add_row("why not written", ", ".join(f"{k} x{v}" for k, v in summary.reasons.most_common()))
    rate = summary.processed_now / summary.seconds * 60 if summary.seconds else 0.0
    table.add_row("this run", f"{summary.processed_now} inputs in {summary.seconds:.1f} s ({rate:.1f} per minute)"
                  + (f", {summary.resumed} already done" if summary.resumed else ""))
    if summary.stage_rates:
        table.add_row("stage throughput", ", ".join(f"{stage} {rate:,.0f}/min" for stage, rate in summary.stage_rates.items()))
    table.add_row("shards", f"{len(summary.shards)} in {summary.output / 'shards'}")
    table.add_row("manifest", str(summary.output / "manifest.parquet"))
    console.print(table)


@app.command()
def inspect(
    shard: Annotated[Path, typer.Argument(help="A shard written by vidlayer build.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the samples' metadata as JSON.")] = False,
    sample: Annotated[Optional[str], typer.Option(help="Sample key to render (default: the first).")] = None,
    render: Annotated[Optional[Path], typer.Option(help="Write a contact sheet PNG of the sample here.")] = None,
    columns: Annotated[int, typer.Option(help="Frames across time in the contact sheet.")] = 8,
    limit: Annotated[int, typer.Option(help="Samples listed; the rest are counted, not shown.")] = 50,
) -> None:
    """Show what is inside a shard: a table of its samples, and a contact sheet of one of them."""
    import tarfile

    from rich.markup import escape

    from vidlayer.inspector import describe, list_samples, load_sample, render_sample, samples_table

    unreadable = (tarfile.TarError, ValueError, OSError)  # ValueError: UnsafeTarError, SampleError
    if limit < 1 or columns < 1:
        raise fail("--limit and --columns must be at least 1")
    if shard.is_dir():
        raise fail(escape(f"{shard} is a folder; give one of the shard-NNNNNN.tar files in it"))
    try:
        listing = list_samples(shard, limit)
    except FileNotFoundError:
        raise fail(escape(f"{shard} does not exist")) from None
    except unreadable as e:
        raise fail(escape(f"cannot read {shard}: {e}")) from None
    if as_json:
        console.print_json(json.dumps([describe(s) for s in listing.samples]))
    else:
        console.print(samples_table(listing.samples, title=f"{shard} ({listing.total} samples)", width=console.width))
    if listing.hidden:
        errors.print(f"{listing.hidden} more not shown (raise --limit to list them)", highlight=False)
    if render is None and sample is None:
        return
    if not listing.samples:
        raise fail("the shard holds no samples")
    key = sample if sample is not None else listing.samples[0]["__key__"]
    try:
        path = render_sample(load_sample(shard, key), render or Path(f"{Path(key).name}.png"), columns=columns)
    except KeyError as e:
        raise fail(escape(e.args[0])) from None
    except unreadable as e:  # also layers that are not named, do not decode or do not align
        raise fail(escape(f"cannot render {key!r}: {e}")) from None
    console.print(f"contact sheet of {escape(repr(key))}: [bold]{escape(str(path))}[/]", highlight=False)


@app.command("eval")
def evaluate_command(
    pred: Annotated[Path, typer.Option(help="A `vidlayer build` output folder (shards/ and manifest.parquet).")],
    gt: Annotated[Path, typer.Option(help="Ground truth: `vidlayer synth` output (gt/NAME/) or DAVIS layout "
                                          "(gt/NAME/0000.png ...), matched by source video name.")],
    report: Annotated[Optional[Path], typer.Option(help="Write a report (.md or .html) with pictures here.")] = None,
    out_json: Annotated[Optional[Path], typer.Option("--json", help="Write every row and the means as JSON.")] = None,
) -> None:
    """Score built layers against ground truth: J and F, alpha, background, foreground colour, composite."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from vidlayer.evaluation.evaluate import evaluate
    from vidlayer.evaluation.report import write_report

    with Progress("scoring", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=errors) as bar:
        task = bar.add_task("samples", total=None)
        try:
            evaluation = evaluate(pred, gt, on_sample=lambda row: bar.advance(task))
        except (FileNotFoundError, ValueError) as e:
            raise fail(str(e)) from None
    summary = evaluation.summary()
    table = Table(title=f"{pred} against {gt}")
    for column in ("clip", "status", "J", "F", "alpha MSE", "bg PSNR covered", "confidence"):
        table.add_column(column, justify="left" if column in ("clip", "status") else "right", no_wrap=column == "clip")
    show = lambda v, digits=3: "-" if v is None else f"{v:.{digits}f}"
    for row in evaluation.rows:
        table.add_row(row["clip"], row["status"] if row["status"] == "scored" else f"{row['status']} ({row['reason']})",
                      show(row.get("J")), show(row.get("F")), show(row.get("alpha_mse"), 5),
                      show(row.get("bg_psnr_covered"), 1), show(row.get("confidence")))
    console.print(table)
    console.print(f"J {show(summary['J_all_clips'])}  F {show(summary['F_all_clips'])} over all {summary['clips']} "
                  f"clips; alpha MSE {show(summary['alpha_mse'], 5)}, background PSNR where covered "
                  f"{show(summary['bg_psnr_covered'], 1)} dB over {summary['samples_scored']} scored samples")
    if out_json is not None:
        out_json.write_text(json.dumps({"summary": summary, "rows": evaluation.rows}, indent=1))
    if report is not None:
        try:
            console.print(f"report: [bold]{write_report(evaluation, pred, gt, report)}[/]")
        except ValueError as e:
            raise fail(str(e)) from None


@app.command("eval-generation")
def eval_generation_command(
    samples: Annotated[Path, typer.Option(help="Generated toy samples: a shard, a folder of shards, or `vidlayer "
                                               "sample` output folders (one, or a folder of them).")],
    out_json: Annotated[Optional[Path], typer.Option("--json", help="Write every row and the summary as JSON.")] = None,
) -> None:
    """Score generated toy-domain layers against their prompts: coherence, adherence, leakage, alpha, time."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress

    from vidlayer.evaluation.generation import evaluate_generation, load_samples

    with Progress("scoring", BarColumn(), MofNCompleteColumn(), console=errors) as bar:
        task = bar.add_task("samples", total=None)
        try:
            evaluation = evaluate_generation(load_samples(samples), on_sample=lambda row: bar.advance(task))
        except (FileNotFoundError, ValueError, KeyError) as e:
            raise fail(str(e)) from None
    if not evaluation.rows:
        raise fail(f"no samples found in {samples}")
    summary = evaluation.summary()
    groups = {"all": summary, **summary.get("by_split", {})}
    table = Table(title=f"generation scores of {samples}")
    table.add_column("metric", no_wrap=True)
    for name in groups:
        table.add_column(name, justify="right")
    for metric in (k for k in summary if k != "by_split"):
        table.add_row(metric, *(_cell(group.get(metric)) for group in groups.values()))
    console.print(table)
    if out_json is not None:
        out_json.write_text(json.dumps({"summary": summary, "rows": evaluation.rows}, indent=1))


def _cell(value: float | int | None) -> str:
    return "-" if value is None else (str(value) if isinstance(value, int) else f"{value:.4f}")


@app.command()
def stages() -> None:
    """List the stages and backends a pipeline YAML can use, with their settings."""
    import dataclasses

    from vidlayer.stages import registered

    table = Table(title="stages")
    for column in ("stage", "backend", "settings (default)"):
        table.add_column(column, overflow="fold")
    for (stage, backend), cls in sorted(registered().items()):
        settings = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(cls.Params))
        table.add_row(stage, backend, settings or "-")
    console.print(table)


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="Stage config YAML (model/configs/stage1.yaml, ...).")],
    preset: Annotated[Optional[str], typer.Option(help="tiny, wan2.1-t2v-1.3b or wan2.1-t2v-14b.")] = None,
    data: Annotated[Optional[str], typer.Option(help="Shards: a folder, a path, a brace pattern or URLs.")] = None,
    out: Annotated[Optional[str], typer.Option(help="Run folder (checkpoints, final adapters, logs).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override a config value: key.sub=value "
                                                      "(repeatable).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the run folder's latest checkpoint.")] = True,
) -> None:
    """Train one LayerT2V stage on VidLayer shards (launch with `accelerate launch` for several GPUs)."""
    from layert2v.runs import ConfigError
    from layert2v.train import load_config
    from layert2v.train import train as run_training

    try:
        cfg = load_config(config, preset=preset, data=data, out=out, overrides=tuple(set_ or ()))
        folder = run_training(cfg, resume=resume)
    except ConfigError as e:
        raise fail(str(e)) from None
    if int(os.environ.get("RANK", "0")) != 0:  # one summary per training, not one per process
        return
    run = json.loads((folder / "run.json").read_text())
    state = "finished" if run["finished"] else "paused (run again to resume)"
    console.print(f"{cfg.stage} {state}: [bold]{folder}[/] (loss curve {folder / 'loss.png'})")
    if run.get("eval"):
        report = json.loads(Path(run["eval"]).read_text())
        for name in ("native", "adapted"):
            m = report[name]
            console.print(f"  {name:8s} alpha MAE {m['alpha_mae']:.4f}  boundary MAE {m['boundary_mae']:.4f}  "
                          f"edge sharpness {m['edge_sharpness']:.3f}")


@app.command("repro-toy")
def repro_toy(
    config: Annotated[Optional[Path], typer.Option(help="Study YAML (default: model/configs/repro_toy.yaml).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override a study setting: key=value, e.g. "
                                                      "seeds=[0] or vae.steps=500 (repeatable).")] = None,
) -> None:
    """The paper's ablations on the toy domain: train every variant per seed, score samples, write the report.

    Resumable: a rerun skips what is complete (data, toy VAE, finished runs, scored samples).
    """
    from layert2v.repro.toy import Study, load_repro_config
    from layert2v.runs import ConfigError

    overrides = tuple(set_ or ())
    try:
        study = Study(load_repro_config(config, overrides),
                      command=" ".join(["vidlayer repro-toy", *(f"--set {o}" for o in overrides)]))
        report = study.run()
    except ConfigError as e:
        raise fail(str(e)) from None
    console.print(f"report: [bold]{report}[/] (runs and samples under {study.out})")


@app.command("cache-latents")
def cache_latents_command(
    config: Annotated[Path, typer.Argument(help="The stage 2 or 3 config YAML the cache is for.")],
    out: Annotated[Path, typer.Option(help="Folder for the cached latent shards.")],
    preset: Annotated[Optional[str], typer.Option(help="tiny, wan2.1-t2v-1.3b or wan2.1-t2v-14b.")] = None,
    data: Annotated[Optional[str], typer.Option(help="Shards: a folder, a path, a brace pattern or URLs.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override a config value: key.sub=value "
                                                      "(repeatable).")] = None,
) -> None:
    """Encode the clips once with the frozen VAE and text encoder; train with --set latent_cache=OUT."""
    from layert2v.runs import ConfigError
    from layert2v.train import build_latent_cache, load_config

    try:
        cfg = load_config(config, preset=preset, data=data, overrides=tuple(set_ or ()))
        count = build_latent_cache(cfg, out)
    except (ConfigError, FileExistsError) as e:
        raise fail(str(e)) from None
    console.print(f"cached {count} clips in [bold]{out}[/]; train with --set latent_cache={out}")


@app.command()
def sample(
    run: Annotated[Path, typer.Option(help="A finished training run folder (stage 2 or 3).")],
    prompt: Annotated[str, typer.Option(help="The full scene.")],
    background: Annotated[str, typer.Option("--bg", help="The background layer.")],
    foreground: Annotated[list[str], typer.Option("--fg", help="A foreground layer, top first (repeatable).")],
    out: Annotated[Path, typer.Option(help="Folder for the layer videos, composite and contact sheet.")],
    negative: Annotated[str, typer.Option(help="Negative prompt for every layer.")] = "",
    given: Annotated[Optional[list[str]], typer.Option(help="Hold a layer fixed: NAME=video.mp4 with NAME one of "
                                                       "full, background, fg0, alpha0, ... (repeatable).")] = None,
    frames: Annotated[int, typer.Option(help="Frames (4n+1).")] = 17,
    height: Annotated[int, typer.Option(help="Height (multiple of 16).")] = 64,
    width: Annotated[int, typer.Option(help="Width (multiple of 16).")] = 64,
    steps: Annotated[int, typer.Option(help="Sampling steps.")] = 30,
    guidance: Annotated[float, typer.Option(help="Classifier-free guidance scale.")] = 5.0,
    scheduler: Annotated[str, typer.Option(help="unipc or flow-euler.")] = "unipc",
    shift: Annotated[float, typer.Option(help="Timestep shift (Wan: 3 at 480p, 5 at 720p).")] = 3.0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Generate an editable layered video from per-layer prompts with a trained run."""
    from layert2v.pipeline import LayerPrompts, LayerT2VPipeline, read_given_layers
    from layert2v.runs import ConfigError

    prompts = LayerPrompts(prompt, background, tuple(foreground), negative)
    try:
        pipe = LayerT2VPipeline.from_run(run, scheduler=scheduler, shift=shift,
                                         device="cuda" if _cuda() else "cpu")
        conditions = read_given_layers(given or [], prompts.layout, frames, height, width)
        with _progress(steps) as advance:
            (video,) = pipe(prompts, num_frames=frames, height=height, width=width, steps=steps,
                            guidance_scale=guidance, seed=seed, given=conditions, progress=advance)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        raise fail(str(e)) from None
    written = video.save(out)
    console.print(f"layers: {', '.join(sorted(video.layers))} -> [bold]{out}[/]")
    console.print(f"contact sheet: [bold]{written['contact_sheet']}[/]")
    console.print(f"cross-layer coherence: mean |full - composite(fg, alpha, bg)| = {video.coherence_error():.4f}")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _progress(total: int):
    """A rich progress bar whose advance(i, n) callback the sampler calls after each step."""
    from contextlib import contextmanager

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    @contextmanager
    def bar():
        with Progress("sampling", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console) as p:
            task = p.add_task("sampling", total=total)
            yield lambda i, n: p.update(task, completed=i, total=n)

    return bar()


if __name__ == "__main__":
    app()
