"""`vidlayer repro-toy` end to end at micro scale: every step, the report, and resuming without redoing work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from layert2v.repro.toy import CONFIGS, Study, load_repro_config
from layert2v.runs import ConfigError, run_provenance
from vidlayer.cli import app

MICRO = ("train_samples=6", "test_samples=3", "eval_test=2", "eval_seen=1", "seeds=[0]",
         "vae.steps=3", "vae.max_clips=6", "vae.eval_clips=1", "vae.batch_size=2", "vae.warmup=1",
         "stage1=[optim.max_steps=2, checkpoint_every=2, data.batch_size=2, data.shuffle_buffer=2]",
         "train=[optim.max_steps=3, data.batch_size=2, data.shuffle_buffer=2, checkpoint_every=3, log_every=1]",
         "sample_steps=2")
VARIANTS = ("full", "native_vae", "independent")


@pytest.fixture(scope="module")
def study_config(tmp_path_factory) -> Path:
    """The packaged study cut down to three variants and one task, in a temp folder."""
    folder = tmp_path_factory.mktemp("repro")
    raw = yaml.safe_load(CONFIGS.joinpath("repro_toy.yaml").read_text())
    raw["variants"] = {name: raw["variants"][name] for name in VARIANTS}
    raw["tasks"] = {"decompose": raw["tasks"]["decompose"]}
    raw["claims"] = [c for c in raw["claims"] if c["ablation"] in VARIANTS]
    raw["out"], raw["report"] = str(folder / "study"), str(folder / "docs" / "RESULTS.md")
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def finished(study_config) -> Study:
    study = Study(load_repro_config(study_config, MICRO), progress=False)
    study.run()
    return study


def _mtimes(folder: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_every_variant_is_trained_with_its_switches(finished):
    runs = {name: run_provenance(finished.run_folder(name, 0)) for name in VARIANTS}
    assert all(info["finished"] for info in runs.values())
    assert runs["full"]["alpha_adapter"] and runs["full"]["joint_attention"]
    assert runs["native_vae"]["alpha_adapter"] is None  # mattes through the native VAE
    assert runs["independent"]["joint_attention"] is False
    assert runs["full"]["model"] == str(finished.base)  # the toy base, with its fitted VAE


def test_samples_carry_their_toy_scene_and_split(finished):
    for name in (*VARIANTS, "task-decompose"):
        folders = sorted(p.parent for p in (finished.out / "samples" / name / "seed0").glob("*/sample.json"))
        scenes = [json.loads((f / "sample.json").read_text())["toy"] for f in folders]
        assert len(scenes) == 3
        assert sum(any(o["held_out"] for o in s["objects"]) for s in scenes) == 2  # eval_test held-out prompts


def test_the_true_layers_score_perfectly_and_the_vae_is_a_reference(finished):
    truth = json.loads((finished.out / "samples" / "truth" / "score.json").read_text())["summary"]
    for metric in ("colour_accuracy", "shape_accuracy", "motion_accuracy", "texture_accuracy"):
        assert truth[metric] == 1.0
    for alpha in ("adapter", "native"):
        assert (finished.out / "samples" / f"vae-{alpha}" / "score.json").exists()


def test_the_report_has_every_row_claim_and_figure(finished):
    report = Path(finished.config.report)
    text = report.read_text()
    for label in ("full model", "native VAE for alpha", "independent layers", "task: decomposition",
                  "true layers", "true layers through the VAE (native alpha)"):
        assert label in text
    assert "native-VAE mattes are blurry" in text and "joint serialization" in text
    assert "removing LayerAdaLN" not in text  # its ablation is not in this study
    figures = report.parent / "figures" / "repro-toy"
    assert (figures / "loss_curves.png").stat().st_size > 0 and (figures / "samples_grid.png").stat().st_size > 0
    assert "toy VAE" in text and "held-out reconstruction" in text


def test_a_rerun_redoes_nothing_and_a_lost_score_is_redone_alone(finished, study_config):
    before = _mtimes(finished.out)
    lost = finished.out / "samples" / "independent" / "seed0" / "score.json"
    lost.unlink()
    Study(load_repro_config(study_config, MICRO), progress=False).run()
    after = _mtimes(finished.out)
    changed = {p for p in after if before.get(p) != after[p]}
    assert str(lost) in changed
    assert all("/samples/independent/" in p for p in changed)  # no training, caching or other sampling redone


def test_the_command_reports_where_the_results_are(finished, study_config):
    result = CliRunner().invoke(app, ["repro-toy", "--config", str(study_config), *sum((["--set", s] for s in MICRO), [])])
    assert result.exit_code == 0, result.output
    assert "report:" in result.output and "RESULTS.md" in result.output


def test_bad_study_configs_are_refused(study_config, tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        load_repro_config(study_config, ("seeds",))
    raw = yaml.safe_load(study_config.read_text())
    del raw["variants"]["full"]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="full"):
        load_repro_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError):
        load_repro_config(study_config, ("variants.full.alpha=sideways",))


def test_a_folder_holding_a_study_with_other_settings_is_refused(finished, study_config):
    other = Study(load_repro_config(study_config, (*MICRO, "sample_steps=3")), progress=False)
    with pytest.raises(ConfigError, match="sample_steps"):
        other.run()
    assert json.loads((finished.out / "study.json").read_text())["sample_steps"] == 2
