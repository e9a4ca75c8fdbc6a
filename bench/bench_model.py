"""Training-step cost of the layered transformer against the plain Wan transformer it wraps.

Measures one training step (forward, MSE loss against a random target, backward; gradients set
to None between steps, no optimizer) of `LayeredWanTransformer` and of the plain
`WanTransformer3DModel` at the same token count: the same weights (the layered model wraps the
very same backbone module), the same packed latents [B, 16, L*T', H', W'] and the same
concatenated text [B, P*S, D]. For the plain step the backbone's own attention processors are
put back, so it runs exactly diffusers' code (the layered model's forward hooks stay registered
but do nothing outside `layered(...)`). The weights come from
`presets.random_backbone`, with the modules diffusers keeps in fp32 (`_keep_in_fp32_modules`)
cast back to fp32, as `from_pretrained(torch_dtype=bf16)` leaves a real checkpoint.

- Step time: the two models' steps alternate (plain, layered, plain, layered, ...) after
  `--warmup` untimed rounds; each step is timed on the wall clock between device syncs and the
  median of `--steps` is reported, with the layered/plain ratio (target: at most 1.05).
- Throughput: tokens/s, tokens = B * L * T' * H'/2 * W'/2 per step; FLOPs of one step counted
  once, outside timing, with torch.utils.flop_counter (matmuls and attention); on CUDA the model
  FLOPs utilisation against the card's dense bf16 peak (H100 SXM/H200: 989 TFLOP/s, or
  `--peak-tflops`), on CPU the achieved GFLOP/s.
- Peak memory of a step above the resting model and inputs (gradients are None at the start
  of a step, so the peak includes them): on CUDA the allocator's max_memory_allocated() minus
  memory_allocated() just before the step (largest over the timed steps). The CPU has no
  allocator peak counter, so one extra step of each model runs under torch.profiler with
  profile_memory, whose allocation records carry the running total of live CPU tensor bytes
  allocated since the profiler started; the step's peak is the largest total. It counts
  tensor memory only (what the CUDA number counts too), not allocator slack or library
  scratch; `--cpu-memory rss` instead runs each model in a fresh subprocess and reports its
  peak resident set (VmHWM, reset through /proc/self/clear_refs after the build) above its RSS
  before the steps, which also counts malloc retention and fragmentation.

`--gradient-checkpointing` measures with checkpointing on, `--also-checkpointing` measures both
without and with it in one run; a configuration that fails (out of memory, a checkpointing
error) is reported as such. Results go to bench/out/bench_model.json.

    python bench/bench_model.py                      # tiny preset on CPU, about a minute
    python bench/bench_model.py --preset wan2.1-t2v-1.3b --device cuda --gradient-checkpointing
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# Quiet the profiler's C++ chatter (kineto start/stop lines, c10 allocator warnings); read at import.
os.environ.setdefault("KINETO_LOG_LEVEL", "6")
os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from diffusers.utils import logging as diffusers_logging  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from torch.utils import flop_counter  # noqa: E402

from layert2v.layout import Layout  # noqa: E402
from layert2v.presets import get_preset, random_backbone  # noqa: E402
from layert2v.transformer import LayeredWanTransformer  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
TARGET_RATIO = 1.05
VARIANTS = ("plain", "layered")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Dense bf16 tensor-core peaks (TFLOP/s), matched against torch.cuda.get_device_name().
PEAK_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0))
CHILD_MARK = "BENCH_MODEL_CHILD "
MEMORY_METHODS = {
    "cuda": "torch.cuda.max_memory_allocated() - memory_allocated() before the step",
    "allocator": "CPU tensor allocations of one step (torch.profiler profile_memory, running total's peak)",
    "rss": None,  # the subprocess names its own method
    "none": None,
}
# Defaults per preset family: (frames, height, width); tiny is sized for about 1 s a step on 2 CPU cores.
SIZES = {"tiny": (17, 256, 448), "wan": (41, 384, 672)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", help="tiny, wan2.1-t2v-1.3b or wan2.1-t2v-14b")
    parser.add_argument("--frames", type=int, help="video frames per layer, 4k+1 (default 17 tiny, 41 Wan)")
    parser.add_argument("--height", type=int, help="pixels, multiple of 16 (default 256 tiny, 384 Wan)")
    parser.add_argument("--width", type=int, help="pixels, multiple of 16 (default 448 tiny, 672 Wan)")
    parser.add_argument("--foregrounds", type=int, default=1, help="K: layers = 2 + 2K, prompts = 2 + K")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model before timing")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=tuple(DTYPES), help="default: bf16 on cuda, fp32 on cpu")
    parser.add_argument("--positions", choices=("concat", "aligned", "4d"), default="concat")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="measure with checkpointing on")
    parser.add_argument("--also-checkpointing", action="store_true", help="measure both without and with it")
    parser.add_argument("--lora", type=int, default=0, metavar="RANK",
                        help="train LoRA of this rank on a frozen backbone instead of all weights (0: all weights)")
    parser.add_argument("--peak-tflops", type=float, help="device peak for MFU (default: detected from the card)")
    parser.add_argument("--profile", action="store_true", help="also print torch.profiler's ops that differ most")
    parser.add_argument("--cpu-memory", choices=("allocator", "rss", "none"), default="allocator",
                        help="CPU peak memory: tensor allocations (profiler), process RSS (subprocesses) or none")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=OUT / "bench_model.json")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--child-checkpointing", type=int, choices=(0, 1), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    frames, height, width = SIZES["tiny" if args.preset == "tiny" else "wan"]
    args.frames = args.frames or frames
    args.height = args.height or height
    args.width = args.width or width
    args.dtype = args.dtype or ("bf16" if args.device == "cuda" else "fp32")
    if (args.frames - 1) % 4:
        parser.error(f"--frames must be 4k+1 (the VAE's temporal stride), got {args.frames}")
    if args.height % 16 or args.width % 16:
        parser.error("--height and --width must be multiples of 16 (VAE stride 8 x patch 2)")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device")
    return args


# --- the two models, sharing one backbone --------------------------------------------------


class Bench:
    """The backbone, the layered wrapper around it, one fixed batch, and a training step for each."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = torch.device(args.device)
        dtype = DTYPES[args.dtype]
        preset = get_preset(args.preset)
        torch.manual_seed(args.seed)
        backbone = random_backbone(args.preset, dtype)
        keep = backbone._keep_in_fp32_modules or []
        for name, tensor in [*backbone.named_parameters(), *backbone.named_buffers()]:
            if any(k in name.split(".") for k in keep):
                tensor.data = tensor.data.float()
        backbone.to(self.device)
        plain_processors = [(block.attn1.processor, block.attn2.processor) for block in backbone.blocks]
        self.layered = LayeredWanTransformer.from_backbone(backbone, positions=args.positions).to(self.device)
        self.backbone = backbone
        self.processors = {"plain": plain_processors,
                           "layered": [(b.attn1.processor, b.attn2.processor) for b in backbone.blocks]}
        if args.lora:
            self.layered.add_lora(args.lora)
            for name, param in self.layered.named_parameters():
                param.requires_grad_("lora_" in name or name == "layer_modulation")
        self.layout = Layout(num_foregrounds=args.foregrounds)
        self.params = sum(p.numel() for p in backbone.parameters())
        self.trainable = sum(p.numel() for p in self.layered.parameters() if p.requires_grad)
        self.current: str | None = None

        t_lat, h_lat, w_lat = (args.frames - 1) // 4 + 1, args.height // 8, args.width // 8
        p_t, p_h, p_w = backbone.config.patch_size
        layers = self.layout.num_layers
        self.grid = (layers * t_lat // p_t, h_lat // p_h, w_lat // p_w)
        self.tokens = args.batch * self.grid[0] * self.grid[1] * self.grid[2]
        gen = torch.Generator().manual_seed(args.seed + 1)
        shape = (args.batch, backbone.config.in_channels, layers * t_lat, h_lat, w_lat)
        text = (args.batch, self.layout.num_prompts, preset.text_length, preset.transformer["text_dim"])
        self.latents = torch.randn(shape, generator=gen).to(self.device, dtype)
        self.target = torch.randn(shape, generator=gen).to(self.device, torch.float32)
        self.timesteps = (torch.rand(args.batch, generator=gen) * 1000).to(self.device)
        self.prompt_embeds = torch.randn(text, generator=gen).to(self.device, dtype)

    def use(self, variant: str, checkpointing: bool) -> None:
        """Give the shared backbone `variant`'s attention processors and set its checkpointing
        the way that model's user would (the layered model's replays its layer state)."""
        for block, (self_attn, cross_attn) in zip(self.backbone.blocks, self.processors[variant]):
            block.attn1.processor, block.attn2.processor = self_attn, cross_attn
        model = self.layered if variant == "layered" else self.backbone
        model.enable_gradient_checkpointing() if checkpointing else model.disable_gradient_checkpointing()

    def forward(self, variant: str) -> torch.Tensor:
        if variant == "layered":
            return self.layered(self.latents, self.timesteps, self.prompt_embeds, self.layout)
        return self.backbone(self.latents, self.timesteps, self.prompt_embeds.flatten(1, 2), return_dict=False)[0]

    def step(self, variant: str) -> None:
        self.current = variant  # named in the report if the step fails
        self.layered.zero_grad(set_to_none=True)
        loss = F.mse_loss(self.forward(variant).float(), self.target)
        loss.backward()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()


# --- measurements --------------------------------------------------------------------------


def _cpu_sdpa_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query, key, value)


def _cpu_sdpa_backward_flops(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_backward_flop_count(grad_out, query, key, value)


# torch counts the CUDA attention kernels but not the CPU flash kernel SDPA dispatches to here.
_EXTRA_FLOPS = {
    op: fn for name, fn in (("_scaled_dot_product_flash_attention_for_cpu", _cpu_sdpa_flops),
                            ("_scaled_dot_product_flash_attention_for_cpu_backward", _cpu_sdpa_backward_flops))
    if (op := getattr(torch.ops.aten, name, None)) is not None
}


def count_flops(bench: Bench, variant: str) -> int:
    """FLOPs of one training step (matmuls and attention; elementwise work is not counted)."""
    with flop_counter.FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOPS) as counter:
        bench.step(variant)
    bench.sync()
    return counter.get_total_flops()


def time_steps(bench: Bench, checkpointing: bool) -> dict[str, dict[str, Any]]:
    """ABAB-interleaved step times (and, on CUDA, each step's peak allocation above its start)."""
    cuda = bench.device.type == "cuda"
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    peaks: dict[str, list[int]] = {v: [] for v in VARIANTS}
    for round_ in range(bench.args.warmup + bench.args.steps):
        for variant in VARIANTS:
            bench.use(variant, checkpointing)
            bench.layered.zero_grad(set_to_none=True)
            if cuda:
                bench.sync()
                resting = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            bench.step(variant)
            bench.sync()
            elapsed = time.perf_counter() - start
            if round_ >= bench.args.warmup:
                times[variant].append(elapsed)
                if cuda:
                    peaks[variant].append(torch.cuda.max_memory_allocated() - resting)
    return {v: {"step_seconds": times[v], "peak_bytes": max(peaks[v]) if peaks[v] else None} for v in VARIANTS}


def cpu_allocator_peak(bench: Bench, variant: str) -> int:
    """Peak live CPU tensor bytes allocated during one step (see the module docstring)."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    bench.layered.zero_grad(set_to_none=True)
    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        bench.step(variant)
    records, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            records.append((node.start_time_ns, node.extra_fields.alloc_size, node.extra_fields.total_allocated))
    records.sort()
    # The running total is process-wide and may carry an offset from earlier profiling sessions.
    start = records[0][2] - records[0][1]
    return max(total for _, _, total in records) - start


def _read_status(field: str) -> int:
    """A /proc/self/status memory field in bytes."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1)) * 1024


def child_memory(args: argparse.Namespace) -> None:
    """In a fresh process: peak resident memory of two steps of one model above the rested build."""
    bench = Bench(args)
    bench.use(args.child, bool(args.child_checkpointing))
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
        method = "peak RSS (VmHWM after /proc/self/clear_refs) above RSS before the steps, fresh process"
        before = _read_status("VmRSS")
    except OSError:
        method = "ru_maxrss growth over the build's maximum, fresh process (a lower bound)"
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result: dict[str, Any] = {"method": method}
    try:
        for _ in range(2):
            bench.step(args.child)
        after = (_read_status("VmHWM") if method.startswith("peak RSS")
                 else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        result["peak_bytes"] = after - before
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        result["error"] = _describe(exc)
    print(CHILD_MARK + json.dumps(result), flush=True)


def cpu_memory(argv: list[str], variant: str, checkpointing: bool) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--child", variant,
           "--child-checkpointing", str(int(checkpointing))]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(CHILD_MARK):
            return json.loads(line[len(CHILD_MARK):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"error": f"memory subprocess exited {proc.returncode}: {tail[0]}"}


def profile_diff(bench: Bench, checkpointing: bool, top: int = 15) -> tuple[list[dict[str, Any]], Table]:
    """Self time per op of one step of each model; the ops the layered step spends most extra time in."""
    from torch.profiler import ProfilerActivity, profile

    cuda = bench.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    self_us: dict[str, dict[str, float]] = {}
    for variant in VARIANTS:
        bench.use(variant, checkpointing)
        bench.step(variant)
        bench.sync()
        with profile(activities=activities) as prof:
            bench.step(variant)
            bench.sync()
        key = ("self_device_time_total" if hasattr(prof.key_averages()[0], "self_device_time_total")
               else "self_cuda_time_total") if cuda else "self_cpu_time_total"
        self_us[variant] = {e.key: getattr(e, key) for e in prof.key_averages()}
    ops = set(self_us["plain"]) | set(self_us["layered"])
    rows = sorted(({"op": op, "plain_ms": self_us["plain"].get(op, 0) / 1e3,
                    "layered_ms": self_us["layered"].get(op, 0) / 1e3} for op in ops),
                  key=lambda r: r["layered_ms"] - r["plain_ms"], reverse=True)
    total = {v: sum(self_us[v].values()) / 1e3 for v in VARIANTS}
    table = Table(title=f"profiler, one step, self {'device' if cuda else 'CPU'} time "
                        f"(checkpointing {'on' if checkpointing else 'off'}): ops with the most extra time")
    for column in ("op", "plain ms", "layered ms", "extra ms"):
        table.add_column(column, justify="left" if column == "op" else "right")
    for row in rows[:top]:
        table.add_row(row["op"], f"{row['plain_ms']:.1f}", f"{row['layered_ms']:.1f}",
                      f"{row['layered_ms'] - row['plain_ms']:+.1f}")
    table.add_row("[bold]all ops", f"[bold]{total['plain']:.1f}", f"[bold]{total['layered']:.1f}",
                  f"[bold]{total['layered'] - total['plain']:+.1f}")
    return rows[:top], table


def _describe(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[:2]
    return f"{type(exc).__name__}: {' '.join(first)}"[:300]


def peak_tflops(args: argparse.Namespace) -> tuple[float | None, str]:
    if args.peak_tflops:
        return args.peak_tflops, "--peak-tflops"
    name = torch.cuda.get_device_name()
    for key, tflops in PEAK_TFLOPS:
        if key in name:
            return tflops, f"dense bf16 peak of {key}"
    return None, f"unknown card {name!r}: pass --peak-tflops"


# --- driver --------------------------------------------------------------------------------


def measure(bench: Bench, checkpointing: bool, argv: list[str], tables: list[Table]) -> dict[str, Any]:
    """Everything for one checkpointing setting: FLOPs (also the first, untimed step), times, memory."""
    mode: dict[str, Any] = {"gradient_checkpointing": checkpointing}
    cuda, args = bench.device.type == "cuda", bench.args
    try:
        flops = {}
        for variant in VARIANTS:
            bench.use(variant, checkpointing)
            flops[variant] = count_flops(bench, variant)
        timed = time_steps(bench, checkpointing)
        if not cuda and args.cpu_memory == "allocator":
            for variant in VARIANTS:
                bench.use(variant, checkpointing)
                timed[variant]["peak_bytes"] = cpu_allocator_peak(bench, variant)
    except Exception as exc:  # noqa: BLE001 - e.g. out of memory, a checkpoint recomputation mismatch
        mode["error"] = f"{bench.current} failed: {_describe(exc)}"
    bench.layered.zero_grad(set_to_none=True)
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    if "error" in mode:
        return mode
    for variant in VARIANTS:
        median = statistics.median(timed[variant]["step_seconds"])
        mode[variant] = {
            "step_seconds": timed[variant]["step_seconds"],
            "median_step_seconds": median,
            "tokens_per_second": bench.tokens / median,
            "flops_per_step": flops[variant],
            "achieved_tflops": flops[variant] / median / 1e12,
            "peak_bytes": timed[variant]["peak_bytes"],
            "memory_method": MEMORY_METHODS["cuda" if cuda else args.cpu_memory],
        }
        if not cuda and args.cpu_memory == "rss":
            mem = cpu_memory(argv, variant, checkpointing)
            mode[variant]["peak_bytes"] = mem.get("peak_bytes")
            mode[variant]["memory_method"] = mem.get("method")
            if "error" in mem:
                mode[variant]["memory_error"] = mem["error"]
    ratio = lambda key: (mode["layered"][key] / mode["plain"][key]  # noqa: E731
                         if mode["layered"].get(key) and mode["plain"].get(key) else None)
    mode["ratio_time"] = ratio("median_step_seconds")
    mode["ratio_memory"] = ratio("peak_bytes")
    mode["ratio_flops"] = ratio("flops_per_step")
    if bench.args.profile:
        mode["profile_extra_ops"], table = profile_diff(bench, checkpointing)
        tables.append(table)
    return mode


def main() -> None:
    argv = sys.argv[1:]
    args = parse_args(argv)
    diffusers_logging.set_verbosity_error()
    if args.child:
        child_memory(args)
        return
    console = Console() if sys.stdout.isatty() else Console(width=120)
    torch.manual_seed(args.seed)
    build_start = time.perf_counter()
    bench = Bench(args)
    build_seconds = time.perf_counter() - build_start
    modes = [False, True] if args.also_checkpointing else [args.gradient_checkpointing]
    passthrough = [a for a in argv if a not in ("--also-checkpointing", "--gradient-checkpointing", "--profile")]
    device_name = torch.cuda.get_device_name() if bench.device.type == "cuda" else f"{platform.processor() or 'CPU'}"
    peak, peak_source = peak_tflops(args) if bench.device.type == "cuda" else (None, "")
    t_lat = (args.frames - 1) // 4 + 1
    console.print(
        f"[bold]{args.preset}[/] ({bench.params / 1e6:.1f}M params, {bench.trainable / 1e6:.2f}M trainable"
        f"{f', LoRA r={args.lora}' if args.lora else ''}), {args.dtype} on {args.device} ({device_name}, "
        f"{torch.get_num_threads()} threads); K={args.foregrounds}: {bench.layout.num_layers} layers x "
        f"{args.frames} frames ({t_lat} latent) at {args.height}x{args.width}, batch {args.batch} -> "
        f"{bench.tokens} tokens, text {bench.layout.num_prompts} x {get_preset(args.preset).text_length}; "
        f"positions={args.positions}; {args.warmup} warmup + {args.steps} timed steps each, alternating "
        f"(build {build_seconds:.1f} s)"
    )
    results: dict[str, Any] = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                   if not k.startswith("child")},
        "device": device_name, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "params": bench.params, "trainable_params": bench.trainable, "tokens_per_step": bench.tokens,
        "layers": bench.layout.num_layers, "token_grid": bench.grid, "peak_tflops": peak,
        "peak_tflops_source": peak_source, "target_ratio": TARGET_RATIO,
        "resting_bytes": torch.cuda.memory_allocated() if bench.device.type == "cuda" else None, "modes": [],
    }
    profiles: list[Table] = []
    for checkpointing in modes:
        results["modes"].append(measure(bench, checkpointing, passthrough, profiles))

    table = Table(title=f"training step, layered vs plain at {bench.tokens} tokens ({args.preset}, {args.dtype}, "
                        f"{args.device})")
    for column in ("checkpointing", "model", "median s/step", "tokens/s", "GFLOP/step",
                   "MFU" if peak else "GFLOP/s", "step peak MiB"):
        table.add_column(column, justify="left" if column in ("checkpointing", "model") else "right")
    for mode in results["modes"]:
        ckpt = "on" if mode["gradient_checkpointing"] else "off"
        if "error" in mode:
            table.add_row(ckpt, "[red]failed", mode["error"][:60], "", "", "", "")
            continue
        for variant in VARIANTS:
            m = mode[variant]
            rate = (f"{m['achieved_tflops'] * 1e12 / (peak * 1e12):.1%}" if peak
                    else f"{m['achieved_tflops'] * 1e3:.1f}")
            mem = f"{m['peak_bytes'] / 2**20:.1f}" if m.get("peak_bytes") is not None else "-"
            table.add_row(ckpt, variant, f"{m['median_step_seconds']:.3f}", f"{m['tokens_per_second']:,.0f}",
                          f"{m['flops_per_step'] / 1e9:.2f}", rate, mem)
        fmt = lambda r: f"{r:.3f}" if r else "-"  # noqa: E731
        table.add_row(ckpt, "[bold]layered/plain", f"[bold]{fmt(mode['ratio_time'])}",
                      f"[bold]{fmt(1 / mode['ratio_time'])}", fmt(mode["ratio_flops"]), "",
                      f"[bold]{fmt(mode['ratio_memory'])}")
    for profile_table in profiles:
        console.print(profile_table)
    console.print(table)
    for mode in results["modes"]:
        ckpt = "on" if mode["gradient_checkpointing"] else "off"
        if "error" in mode:
            console.print(f"[red]checkpointing {ckpt}: {mode['error']}")
            continue
        verdicts = []
        for label, key in (("time", "ratio_time"), ("peak memory", "ratio_memory")):
            r = mode[key]
            if r is None:
                verdicts.append(f"{label} -")
            else:
                met = "[green]met[/]" if r <= TARGET_RATIO else "[red]NOT met[/]"
                verdicts.append(f"{label} {r:.3f} ({met})")
        spread = {v: (min(mode[v]["step_seconds"]), max(mode[v]["step_seconds"])) for v in VARIANTS}
        console.print(f"checkpointing {ckpt}: layered/plain {', '.join(verdicts)}, target <= {TARGET_RATIO}; "
                      f"step range plain {spread['plain'][0]:.3f}-{spread['plain'][1]:.3f} s, "
                      f"layered {spread['layered'][0]:.3f}-{spread['layered'][1]:.3f} s")
        for variant in VARIANTS:
            if mode[variant].get("memory_error"):
                console.print(f"[red]  {variant} memory: {mode[variant]['memory_error']}")
    methods = {m[v].get("memory_method") for m in results["modes"] if "error" not in m for v in VARIANTS}
    for method in sorted(filter(None, methods)):
        console.print(f"memory: {method}")
    console.print("FLOPs: torch.utils.flop_counter over one step (matmuls + attention)"
                  + (f"; MFU against {peak:.0f} TFLOP/s ({peak_source})" if peak else
                     f"; {peak_source}" if peak_source else "; GFLOP/s achieved (no MFU on CPU)"))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2))
    console.print(f"written: {os.path.relpath(args.output)}")


if __name__ == "__main__":
    main()
