import pytest

from vidlayer.config import PIPELINES_DIR, PipelineError, load_pipeline, parse_pipeline


def minimal(**window_params):
    return {"name": "t", "stages": [{"stage": "decode"}, {"stage": "window", "params": window_params}]}


def test_shipped_default_pipeline_loads_with_every_stage():
    pipeline = load_pipeline("default")
    assert [s.stage for s in pipeline.stages][:3] == ["decode", "filter", "window"]
    assert pipeline.spec("window").params.num_frames == 49
    assert (PIPELINES_DIR / "default.yaml").exists()


def test_overrides_change_values_and_the_hash():
    base = load_pipeline("default")
    changed = load_pipeline("default", ["window.num_frames=17", "output.shard_max_samples=5",
                                        "decode.resources.cpus=2"])
    assert changed.spec("window").params.num_frames == 17
    assert changed.output.shard_max_samples == 5
    assert changed.spec("decode").resources.cpus == 2
    assert changed.config_hash() != base.config_hash()
    # Resources decide where work runs, not what it produces.
    assert load_pipeline("default", ["decode.resources.cpus=2"]).config_hash() == base.config_hash()


def test_ints_are_accepted_for_floats_and_lists_for_tuples():
    assert parse_pipeline(minimal(fps=12)).spec("window").params.fps == 12.0


def test_exponents_yaml_reads_as_strings_are_numbers():
    assert load_pipeline("default", ["quality.max_flicker=1e9"]).spec("quality").params.max_flicker == 1e9


def test_every_shipped_pipeline_loads():
    for path in sorted(PIPELINES_DIR.glob("*.yaml")):
        assert load_pipeline(path).stages, path.name
    models = load_pipeline("models")
    assert [(s.stage, s.backend) for s in models.stages if s.resources.gpus] == [
        ("ground", "detector"), ("segment", "sam2"), ("caption", "vlm"), ("qc", "vlm")]


@pytest.mark.parametrize("raw, message", [
    (minimal(num_frame=3), "unknown settings \\['num_frame'\\]"),
    (minimal(num_frames="many"), "expected int"),
    (minimal(upscale=1), "expected bool"),
    (minimal(fps="fast"), "expected a number"),
    ({"stages": [{"stage": "nope"}]}, "unknown stage 'nope'"),
    ({"stages": [{"stage": "decode", "backend": "magic"}]}, "unknown backend 'magic'"),
    ({"stages": []}, "non-empty list"),
    ({"stages": [{"stage": "decode"}, {"stage": "decode"}]}, "appears twice"),
    ({"stages": [{"stage": "decode", "parms": {}}]}, "unknown keys"),
    ({"stages": [{"stage": "decode"}], "extra": 1}, "unknown top-level keys"),
    ({"stages": [{"stage": "filter", "params": {"shot_cuts": "merge"}}]}, "not one of"),
])
def test_bad_pipelines_are_rejected_with_a_reason(raw, message):
    with pytest.raises(PipelineError, match=message):
        parse_pipeline(raw)


@pytest.mark.parametrize("override, message", [
    ("window.num_frames", "stage.param=value"),
    ("nostage.x=1", "no stage 'nostage'"),
    ("window.a.b.c=1", "too many dots"),
])
def test_bad_overrides_are_rejected(override, message):
    with pytest.raises(PipelineError, match=message):
        load_pipeline("default", [override])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(PipelineError, match="not found"):
        load_pipeline(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages: [unclosed")
    with pytest.raises(PipelineError, match="cannot read pipeline"):
        load_pipeline(bad)
