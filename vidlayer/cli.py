"""The `vidlayer` command. Thin: each command parses its options and calls one function."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from vidlayer.config import PipelineError, load_pipeline

app = typer.Typer(help="Build layered video datasets (full, background, foreground + alpha) from raw clips.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console()
errors = Console(stderr=True)


def fail(message: str) -> typer.Exit:
    """One clear line on stderr and a non-zero exit."""
    errors.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write OUT/raw (clips + captions) and OUT/gt (true layers).")],
    n: Annotated[int, typer.Option("--n", help="Number of clips.")] = 8,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same clips.")] = 0,
    width: Annotated[int, typer.Option(help="Frame width (even).")] = 854,
    height: Annotated[int, typer.Option(help="Frame height (even).")] = 480,
    fps: Annotated[float, typer.Option(help="Frame rate.")] = 24.0,
    seconds: Annotated[float, typer.Option(help="Clip length.")] = 4.0,
) -> None:
    """Make synthetic raw clips from real photographs, with their ground-truth layers kept beside them."""
    from vidlayer.synth import synthesize

    try:
        keys = synthesize(out, n, seed, width=width, height=height, fps=fps, seconds=seconds)
    except ValueError as e:
        raise fail(str(e)) from None
    console.print(f"wrote {len(keys)} clips to [bold]{out / 'raw'}[/] and their ground truth to [bold]{out / 'gt'}[/]")


@app.command()
def build(
    input: Annotated[Path, typer.Option("--input", "-i", help="Folder of videos with NAME.txt/NAME.json captions, "
                                        "or a csv/jsonl/parquet manifest with path and caption columns.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder (shards/, manifest.parquet).")],
    workers: Annotated[int, typer.Option(help="Clips processed in parallel.")] = os.cpu_count() or 1,
    pipeline: Annotated[str, typer.Option(help="Pipeline YAML, or the name of one in pipelines/.")] = "default",
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override a pipeline value: "
                                                      "stage.param=value (repeatable).")] = None,
    ray_address: Annotated[Optional[str], typer.Option(help="Join this Ray cluster instead of starting a local one.")] = None,
    executor: Annotated[str, typer.Option(help="ray, or inline (one process, for debugging).")] = "ray",
    input_root: Annotated[Optional[Path], typer.Option(help="Folder that manifest paths are relative to and may not "
                                                       "leave (default: the manifest's folder).")] = None,
) -> None:
    """Turn raw caption-video pairs into layered WebDataset shards. Re-run the same command to resume."""
    from vidlayer.build import BuildError
    from vidlayer.build import build as run_build
    from vidlayer.io.inputs import InputError

    if workers < 1:
        raise fail("--workers must be at least 1")
    try:
        spec = load_pipeline(pipeline, set_ or [])
        summary = run_build(input, output, spec, workers=workers, executor=executor, ray_address=ray_address,
                            input_root=input_root, console=errors)
    except (PipelineError, InputError, BuildError) as e:
        raise fail(str(e)) from None
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
) -> None:
    """Show what is inside a shard: a table of its samples, and a contact sheet of one of them."""
    import tarfile

    from vidlayer.inspector import describe, find_sample, load_samples, render_sample, samples_table
    from vidlayer.io.shards import UnsafeTarError

    try:
        samples = load_samples(shard)
    except FileNotFoundError:
        raise fail(f"{shard} does not exist") from None
    except (tarfile.TarError, UnsafeTarError, ValueError) as e:
        raise fail(f"cannot read {shard}: {e}") from None
    if as_json:
        console.print_json(json.dumps([describe(s) for s in samples]))
    else:
        console.print(samples_table(samples, title=f"{shard} ({len(samples)} samples)", width=console.width))
    if render is not None or sample is not None:
        try:
            chosen = find_sample(samples, sample)
        except KeyError as e:
            raise fail(e.args[0]) from None
        path = render_sample(chosen, render or Path(f"{chosen['__key__']}.png"), columns=columns)
        console.print(f"contact sheet of {chosen['__key__']}: [bold]{path}[/]")


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


if __name__ == "__main__":
    app()
