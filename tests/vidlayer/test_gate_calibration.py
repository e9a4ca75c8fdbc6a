import json

import numpy as np
import pytest
from scipy.stats import spearmanr

from vidlayer.gate_calibration import FEATURES, GateModel, fit


def rows_and_targets(count=60, seed=0):
    """Clips whose J rises with edge alignment and falls with ghost, plus an unrelated signal."""
    rng = np.random.default_rng(seed)
    rows = [{"quality_edge_alignment": rng.random(), "quality_ghost": rng.random(), "quality_border": rng.random()}
            for _ in range(count)]
    targets = [float(1 / (1 + np.exp(-(3 * r["quality_edge_alignment"] - 3 * r["quality_ghost"])))) for r in rows]
    return rows, targets


def test_fit_ranks_clips_by_their_true_quality():
    rows, targets = rows_and_targets()
    model = fit(rows, targets, penalty=0.1)
    held_out, truth = rows_and_targets(seed=1)
    assert spearmanr([model.predict(r) for r in held_out], truth).statistic > 0.95
    weight = dict(zip(model.features, model.weights))
    assert weight["quality_edge_alignment"] > 0 > weight["quality_ghost"]
    assert abs(weight["quality_border"]) < 0.2 * abs(weight["quality_ghost"])
    assert all(0 <= model.predict(r) <= 1 for r in held_out)


def test_a_missing_signal_takes_its_calibration_mean():
    rows, targets = rows_and_targets()
    model = fit(rows, targets)
    row = {"quality_edge_alignment": 0.9, "quality_border": 0.1}
    mean_ghost = model.mean[model.features.index("quality_ghost")]
    assert model.predict(row) == pytest.approx(model.predict({**row, "quality_ghost": mean_ghost}))


def test_explain_names_the_signal_that_pulls_the_prediction_down():
    rows, targets = rows_and_targets()
    model = fit(rows, targets)
    assert model.explain({"quality_edge_alignment": 0.5, "quality_ghost": 0.99, "quality_border": 0.5}) \
        .startswith("quality_ghost 0.99")


def test_save_and_load_round_trip(tmp_path):
    rows, targets = rows_and_targets()
    model = fit(rows, targets, notes={"clips": len(rows)})
    model.save(tmp_path / "gate.json")
    loaded = GateModel.load(tmp_path / "gate.json")
    assert loaded == model and loaded.predict(rows[0]) == model.predict(rows[0])


def test_unreadable_or_inconsistent_calibrations_are_refused(tmp_path):
    with pytest.raises(ValueError, match="missing.json"):
        GateModel.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text(json.dumps({"features": ["a", "b"], "mean": [0], "scale": [1],
                                                   "weights": [1], "bias": 0}))
    with pytest.raises(ValueError, match="differ in length"):
        GateModel.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="at least 4 clips"):
        fit([{"quality_ghost": 0.1}], [0.5])


def test_the_shipped_calibration_is_a_fit_to_synthetic_clips():
    model = GateModel.load()
    assert set(model.features) <= set(FEATURES) and len(model.features) >= 5
    assert model.notes["clips"] >= 24 and model.notes["spearman_leave_one_out"] > 0.5
