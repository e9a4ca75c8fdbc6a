"""A few real steps of each stage on shards from the toolkit, resume, and sampling from the result."""

import json
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from safetensors.torch import load_file
from typer.testing import CliRunner

from layert2v.checkpoint import latest_checkpoint, load_checkpoint
from layert2v.pipeline import LayerPrompts, LayerT2VPipeline
from layert2v.runs import ConfigError
from layert2v.train import LayerLearning, Resumable, load_config, train
from vidlayer.cli import app

CONFIGS = Path(__file__).parents[2] / "model" / "configs"
# CPU-test sized: 5 frames at 32x32, one clip per batch, a checkpoint every 2 steps.
SMALL = ("data.num_frames=5", "data.height=32", "data.width=32", "data.batch_size=1", "data.shuffle_buffer=4",
         "optim.max_steps=4", "optim.warmup_steps=1", "checkpoint_every=2", "log_every=1", "eval_batches=2")


def config(stage: int, shards: Path, out: Path, *extra: str):
    return load_config(CONFIGS / f"stage{stage}.yaml", preset="tiny", data=str(shards), out=str(out),
                       overrides=SMALL + extra)


@pytest.fixture(scope="module")
def shards(inline_build) -> Path:
    return inline_build[0] / "shards"


@pytest.fixture(scope="module")
def runs(shards, tmp_path_factory) -> dict[str, Path]:
    """Stage 1 -> 2 -> 3 chained the way the Makefile chains them."""
    root = tmp_path_factory.mktemp("runs")
    lora = "lora={rank: 4, alpha: 4}"  # the tiny preset fine-tunes fully; the Wan presets use LoRA
    stage1 = train(config(1, shards, root / "stage1", "holdout=0.5"), progress=False)
    stage2 = train(config(2, shards, root / "stage2", f"init={stage1}", "data.foregrounds=null", lora),
                   progress=False)
    stage3 = train(config(3, shards, root / "stage3", f"init={stage2}", lora), progress=False)
    return {"stage1": stage1, "stage2": stage2, "stage3": stage3}


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("stage", ["stage1", "stage2", "stage3"])
def test_each_stage_finishes_and_writes_its_artifacts(runs, stage):
    run = runs[stage]
    info = json.loads((run / "run.json").read_text())
    assert info["finished"] and info["preset"] == "tiny"
    metrics = read_metrics(run)
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    assert all(torch.isfinite(torch.tensor(m["loss"])) for m in metrics)
    assert (run / "loss.png").stat().st_size > 0
    assert any((run / "tensorboard").iterdir())
    assert latest_checkpoint(run / "checkpoints").name == "step-0000004"


def test_stage1_exports_an_alpha_adapter_and_evaluates_it(runs):
    info = json.loads((runs["stage1"] / "run.json").read_text())
    weights = load_file(Path(info["alpha_adapter"]) / "alpha_adapter.safetensors")
    assert any("lora_B" in k for k in weights) and any(k.startswith("project_in.") for k in weights)
    assert any(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k)  # trained away from zero
    report = json.loads(Path(info["eval"]).read_text())
    assert report["clips"] >= 1
    for name in ("native", "adapted"):
        assert set(report[name]) == {"alpha_mae", "boundary_mae", "edge_sharpness"}


def test_later_stages_inherit_what_earlier_stages_made(runs):
    stage1 = json.loads((runs["stage1"] / "run.json").read_text())
    stage2 = json.loads((runs["stage2"] / "run.json").read_text())
    stage3 = json.loads((runs["stage3"] / "run.json").read_text())
    assert stage2["model"] == stage3["model"] == stage1["model"]
    assert stage2["alpha_adapter"] == stage3["alpha_adapter"] == stage1["alpha_adapter"]
    assert stage3["layer_weights"] != stage2["layer_weights"]
    table = load_file(Path(stage3["layer_weights"]) / "layer_weights.safetensors")["layer_modulation"]
    assert table.abs().sum() > 0  # LayerAdaLN moved away from its zero init
    assert (Path(stage3["layer_weights"]) / "pytorch_lora_weights.safetensors").exists()


def test_sampling_from_the_stage3_run(runs, tmp_path):
    out = tmp_path / "sample"
    result = CliRunner().invoke(app, [
        "sample", "--run", str(runs["stage3"]), "--prompt", "a ball on a table", "--fg", "a red ball",
        "--bg", "a table", "--out", str(out), "--frames", "5", "--height", "32", "--width", "32", "--steps", "2",
    ])
    assert result.exit_code == 0, result.output
    assert "coherence" in result.output
    assert {p.name for p in out.iterdir()} >= {"full.mp4", "background.mp4", "fg0.mp4", "alpha0.mp4",
                                                "composite.mp4", "contact_sheet.png", "sample.json"}


def test_the_sampler_loads_the_trained_weights(runs):
    pipe = LayerT2VPipeline.from_run(runs["stage3"])
    info = json.loads((runs["stage3"] / "run.json").read_text())
    saved = load_file(Path(info["layer_weights"]) / "layer_weights.safetensors")["layer_modulation"]
    assert torch.equal(pipe.transformer.layer_modulation.detach(), saved)
    assert pipe.vae.lora_rank is not None  # the stage 1 alpha adapter
    with pytest.raises(ValueError, match="stage 2 or 3"):
        LayerT2VPipeline.from_run(runs["stage1"])


def test_resume_continues_from_the_same_step_and_data_position(shards, runs, tmp_path):
    init = f"init={runs['stage1']}"
    straight = train(config(2, shards, tmp_path / "straight", init, "data.foregrounds=null"), progress=False)
    paused = train(config(2, shards, tmp_path / "resumed", init, "data.foregrounds=null", "stop_after=2"),
                   progress=False)
    assert not json.loads((paused / "run.json").read_text())["finished"]
    assert [m["step"] for m in read_metrics(paused)] == [1, 2]
    resumed = train(config(2, shards, tmp_path / "resumed", init, "data.foregrounds=null"), progress=False)
    a, b = read_metrics(straight), read_metrics(resumed)
    assert [m["step"] for m in b] == [1, 2, 3, 4]
    assert [m["loss"] for m in a] == pytest.approx([m["loss"] for m in b], rel=1e-5)
    _, end_a = load_checkpoint(latest_checkpoint(straight / "checkpoints"))
    _, end_b = load_checkpoint(latest_checkpoint(resumed / "checkpoints"))
    assert [r["data"] for r in end_a["ranks"]] == [r["data"] for r in end_b["ranks"]]
    for name, tensor in end_a["trainable"].items():
        torch.testing.assert_close(tensor, end_b["trainable"][name], rtol=1e-5, atol=1e-6)
    # The tiny preset fine-tunes the whole transformer; the sampler loads that export too.
    assert (Path(json.loads((resumed / "run.json").read_text())["transformer"]) / "config.json").exists()
    assert LayerT2VPipeline.from_run(resumed).transformer.layer_modulation.abs().sum() > 0


def test_resume_falls_back_past_a_truncated_checkpoint(shards, tmp_path, caplog, monkeypatch):
    run = train(config(1, shards, tmp_path / "run"), progress=False)
    losses = [m["loss"] for m in read_metrics(run)]
    weights = run / "checkpoints" / "step-0000004" / "state.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a save cut short by a full disk
    restored, restore = [], Resumable.restore

    def spy(self, checkpoint, fingerprint):
        restored.append(checkpoint.name)
        return restore(self, checkpoint, fingerprint)

    monkeypatch.setattr(Resumable, "restore", spy)
    with caplog.at_level("WARNING", logger="layert2v.checkpoint"):
        train(config(1, shards, tmp_path / "run"), progress=False)
    assert restored == ["step-0000002"]
    assert any("step-0000004" in r.getMessage() and "SafetensorError" in r.getMessage() for r in caplog.records)
    assert [m["loss"] for m in read_metrics(run)] == pytest.approx(losses, rel=1e-5)
    assert load_checkpoint(latest_checkpoint(run / "checkpoints"))[0] == 4  # written whole again


def test_stage2_trains_from_a_latent_cache(shards, runs, tmp_path):
    cache = tmp_path / "cache"
    result = CliRunner().invoke(app, ["cache-latents", str(CONFIGS / "stage2.yaml"), "--preset", "tiny",
                                      "--data", str(shards), "--out", str(cache), "--set", f"init={runs['stage1']}",
                                      "--set", "data.foregrounds=null", *[f"--set={o}" for o in SMALL]])
    assert result.exit_code == 0, result.output
    run = train(config(2, shards, tmp_path / "cached", f"init={runs['stage1']}", "data.foregrounds=null",
                       f"latent_cache={cache}"), progress=False)
    assert json.loads((run / "run.json").read_text())["finished"]
    assert len(read_metrics(run)) == 4


def test_gradient_accumulation_counts_optimizer_steps(shards, runs, tmp_path):
    init = f"init={runs['stage1']}"
    single = train(config(2, shards, tmp_path / "single", init, "data.foregrounds=null"), progress=False)
    accumulated = train(config(2, shards, tmp_path / "accumulated", init, "data.foregrounds=null",
                               "optim.grad_accum=2"), progress=False)
    lrs = [m["lr"] for m in read_metrics(single)]
    assert [m["step"] for m in read_metrics(accumulated)] == [1, 2, 3, 4]
    assert [m["lr"] for m in read_metrics(accumulated)] == pytest.approx(lrs)


@pytest.mark.parametrize("lora", [(), ("lora={rank: 4, alpha: 4}",)])
def test_without_layer_adaln_the_table_is_not_trained(tiny_checkpoint, tmp_path, lora):
    def trainable(layer_adaln: str) -> list[str]:
        cfg = load_config(CONFIGS / "stage2.yaml", preset="tiny", out=str(tmp_path),
                          overrides=(f"model={tiny_checkpoint}", "init=null", f"layer_adaln={layer_adaln}", *lora))
        job = LayerLearning(cfg, tiny_checkpoint, {}, torch.device("cpu"))
        trained = {id(p) for p in job.parameters()}
        names = [n for n, p in job.transformer.named_parameters() if id(p) in trained]
        assert names == [n for n, p in job.transformer.named_parameters() if p.requires_grad]
        return names

    with_table, without = trainable("true"), trainable("false")
    assert "layer_modulation" in with_table
    assert without == [n for n in with_table if n != "layer_modulation"]
    assert len(without) > 0 and all(".lora_" in n for n in without) == bool(lora)


def test_ablation_switches_reach_run_json_and_the_sampler(shards, tmp_path):
    """A LoRA run exports layer weights, so the sampler rebuilds the transformer from run.json."""
    run = train(config(2, shards, tmp_path / "ablation", "init=null", "data.foregrounds=null", "optim.max_steps=2",
                       "lora={rank: 4, alpha: 4}", "layer_adaln=false", "joint_attention=false"), progress=False)
    info = json.loads((run / "run.json").read_text())
    assert info["finished"] and info["layer_adaln"] is False and info["joint_attention"] is False
    table = load_file(Path(info["layer_weights"]) / "layer_weights.safetensors")["layer_modulation"]
    assert table.abs().sum() == 0  # never trained: still its zero init
    pipe = LayerT2VPipeline.from_run(run)
    assert (pipe.transformer.config.layer_adaln, pipe.transformer.config.joint_attention) == (False, False)
    (video,) = pipe(LayerPrompts("a ball on a table", "a table", ("a red ball",)), num_frames=5, height=32,
                    width=32, steps=1)
    assert all(np.isfinite(layer).all() for layer in video.layers.values())


def test_overrides_reach_into_sections_the_preset_left_null(shards, tmp_path):
    cfg = config(2, shards, tmp_path / "x", "lora.rank=8")  # tiny sets `lora: null`
    assert (cfg.lora.rank, cfg.lora.alpha) == (8, 392)
    assert config(2, shards, tmp_path / "x").lora is None


def test_config_errors_are_one_clear_line(shards, tmp_path):
    with pytest.raises(ConfigError, match="unknown settings"):
        config(2, shards, tmp_path / "x", "optim.learning_rate=1")
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config(CONFIGS / "stage2.yaml", preset="huge")
    with pytest.raises(ConfigError, match="no training config"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="make demo"):
        train(config(1, tmp_path / "no-shards", tmp_path / "z"), progress=False)
    with pytest.raises(ConfigError, match="not a training run"):
        train(config(2, shards, tmp_path / "y", f"init={tmp_path}"), progress=False)
    with pytest.raises(ConfigError, match="use parallel: ddp"):
        config(1, shards, tmp_path / "x", "parallel=fsdp")
    with pytest.raises(ConfigError, match="parallel"):
        config(2, shards, tmp_path / "x", "parallel=zero3")


def test_the_14b_preset_shards_and_the_others_replicate():
    for stage in (2, 3):
        assert load_config(CONFIGS / f"stage{stage}.yaml", preset="wan2.1-t2v-14b").parallel == "fsdp"
        assert load_config(CONFIGS / f"stage{stage}.yaml", preset="wan2.1-t2v-1.3b").parallel == "ddp"


def test_a_changed_config_does_not_resume_silently(shards, runs, tmp_path):
    init = f"init={runs['stage1']}"
    train(config(2, shards, tmp_path / "run", init, "data.foregrounds=null", "stop_after=2"), progress=False)
    with pytest.raises(ConfigError, match="different config"):
        train(config(2, shards, tmp_path / "run", init, "data.foregrounds=null", "optim.lr=0.5"), progress=False)


@pytest.fixture(scope="module")
def two_rank_shards(shards, tmp_path_factory) -> Path:
    """One sample per shard, so that each of two processes reads shards of its own."""
    split = tmp_path_factory.mktemp("split")
    for i, sample in enumerate(wds.WebDataset(sorted(map(str, shards.glob("*.tar"))), shardshuffle=False)):
        with wds.TarWriter(str(split / f"shard-{i:06d}.tar")) as sink:
            sink.write({k: v for k, v in sample.items() if k == "__key__" or not k.startswith("__")})
    assert len(list(split.iterdir())) >= 2
    return split


def torchrun_stage2(data: Path, init: Path, out: Path, *extra: str) -> Path:
    """Stage 2 in two CPU processes (gloo). --standalone picks a free rendezvous port, so two test
    runs on one machine do not collide."""
    args = [f"--set={o}" for o in (*SMALL, f"init={init}", "data.foregrounds=null", *extra)]
    try:
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "vidlayer.cli", "train", str(CONFIGS / "stage2.yaml"), "--preset", "tiny",
                        "--data", str(data), "--out", str(out), *args],
                       check=True, capture_output=True, timeout=300)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        raise AssertionError(f"{e}\n{(e.stderr or b'').decode(errors='replace')[-6000:]}") from None
    return out


@pytest.fixture(scope="module")
def two_process_runs(two_rank_shards, runs, tmp_path_factory) -> dict[str, dict[str, Path]]:
    """For DDP and FSDP: a straight 4-step run and one stopped after 2 steps, then resumed."""
    root = tmp_path_factory.mktemp("two_process")
    made = {}
    for parallel in ("ddp", "fsdp"):
        launch = partial(torchrun_stage2, two_rank_shards, runs["stage1"])
        straight = launch(root / f"{parallel}-straight", f"parallel={parallel}")
        launch(root / f"{parallel}-resumed", f"parallel={parallel}", "stop_after=2")
        resumed = launch(root / f"{parallel}-resumed", f"parallel={parallel}")
        made[parallel] = {"straight": straight, "resumed": resumed}
    return made


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_process_run_resumes_exactly(two_process_runs, parallel):
    """One metrics log, per-rank data positions and RNG, and (FSDP) shards gathered and cut again."""
    straight, resumed = two_process_runs[parallel]["straight"], two_process_runs[parallel]["resumed"]
    assert [m["step"] for m in read_metrics(straight)] == [1, 2, 3, 4]  # written once, by the main process
    assert [m["loss"] for m in read_metrics(resumed)] == pytest.approx([m["loss"] for m in read_metrics(straight)],
                                                                       rel=1e-5)
    _, end_a = load_checkpoint(latest_checkpoint(straight / "checkpoints"))
    _, end_b = load_checkpoint(latest_checkpoint(resumed / "checkpoints"))
    assert len(end_b["ranks"]) == 2
    for name, tensor in end_a["trainable"].items():
        torch.testing.assert_close(tensor, end_b["trainable"][name], rtol=1e-5, atol=1e-6)
    for a, b in zip(end_a["ema"]["shadow_params"], end_b["ema"]["shadow_params"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_fsdp_trains_and_exports_what_ddp_does(two_process_runs):
    """Sharding changes where tensors live, not the maths: same losses, same exported model."""
    ddp, fsdp = two_process_runs["ddp"]["straight"], two_process_runs["fsdp"]["straight"]
    assert [m["loss"] for m in read_metrics(fsdp)] == pytest.approx([m["loss"] for m in read_metrics(ddp)], rel=1e-4)
    _, ddp_state = load_checkpoint(latest_checkpoint(ddp / "checkpoints"))
    _, fsdp_state = load_checkpoint(latest_checkpoint(fsdp / "checkpoints"))
    for key, moment in ddp_state["optimizer"]["state"]["0"].items():
        torch.testing.assert_close(fsdp_state["optimizer"]["state"]["0"][key], moment, rtol=1e-4, atol=1e-6)
    exported = [LayerT2VPipeline.from_run(run).transformer.state_dict() for run in (ddp, fsdp)]
    assert exported[0].keys() == exported[1].keys()
    for name, tensor in exported[0].items():
        torch.testing.assert_close(exported[1][name], tensor, rtol=1e-4, atol=1e-6)


def test_fsdp_exports_a_lora_run(two_rank_shards, runs, tmp_path):
    """With LoRA only LayerAdaLN and the adapter are trained, gathered and written."""
    run = torchrun_stage2(two_rank_shards, runs["stage1"], tmp_path / "run", "parallel=fsdp",
                          "lora={rank: 4, alpha: 4}", "optim.max_steps=2")
    weights = Path(json.loads((run / "run.json").read_text())["layer_weights"])
    _, state = load_checkpoint(latest_checkpoint(run / "checkpoints"))
    averaged = dict(zip(state["trainable"], state["ema"]["shadow_params"]))  # the export holds the EMA weights
    lora = load_file(weights / "pytorch_lora_weights.safetensors")
    assert len(lora) == len(averaged) - 1 and any(t.abs().sum() > 0 for k, t in lora.items() if "lora_B" in k)
    for key, tensor in lora.items():
        torch.testing.assert_close(tensor, averaged["backbone." + key.replace(".weight", ".default.weight")])
    table = load_file(weights / "layer_weights.safetensors")["layer_modulation"]
    torch.testing.assert_close(table, averaged["layer_modulation"])
    pipe = LayerT2VPipeline.from_run(run)
    assert pipe.transformer.has_lora
