"""The quality gate's model: the J a clip's layers are expected to score, from signals without ground truth.

A logistic model on standardised signals, fitted to the true J of synthetic clips (which
include the hard cases: a camera tracking its subject, parallax, near-static subjects, late
entries) by `bench/calibrate_gate.py`. A logistic of fractional targets keeps the prediction in
[0, 1], and an L2 penalty keeps a few dozen clips from fitting noise. The fitted model is a
small JSON file: the shipped one is `gate_calibration.json` beside this module; a user with
labelled clips of their own footage can fit and pass their own (`quality.calibration=PATH`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

SHIPPED = Path(__file__).with_name("gate_calibration.json")
# Signals the gate reads (metric keys), and which of them vary over orders of magnitude (taken as logs).
# The share of never-seen background is left out: it speaks of the background, not of the mattes, and
# follows the clip's length and the subject's pace, which differ between synthetic and real footage.
FEATURES = ("segment_confidence", "quality_motion_inside", "quality_motion_outside", "quality_motion_uncovered",
            "quality_edge_alignment", "quality_colour_contrast", "quality_ghost", "quality_area_variation",
            "quality_border", "quality_alpha_coverage", "quality_alpha_flicker", "quality_composite_error_fg")
LOGGED = {"quality_motion_inside", "quality_motion_outside", "quality_area_variation", "quality_alpha_coverage",
          "quality_alpha_flicker", "quality_composite_error_fg"}
LOG_FLOOR = 1e-3


@dataclass
class GateModel:
    features: list[str]
    mean: list[float]  # of each transformed feature over the calibration clips; a missing metric takes it
    scale: list[float]
    weights: list[float]
    bias: float
    notes: dict = field(default_factory=dict)  # how it was fitted: clips, data sets, rank correlation

    @classmethod
    def load(cls, path: str | Path | None = None) -> GateModel:
        path = Path(path) if path else SHIPPED
        try:
            raw = json.loads(path.read_text())
            model = cls(**raw)
        except (OSError, ValueError, TypeError) as error:
            raise ValueError(f"cannot read the quality gate's calibration {path}: {error}") from None
        if not len(model.features) == len(model.mean) == len(model.scale) == len(model.weights):
            raise ValueError(f"calibration {path}: features, mean, scale and weights differ in length")
        return model

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1) + "\n")

    def _standardised(self, metrics: dict[str, float]) -> np.ndarray:
        raw = [transform(name, metrics[name]) if name in metrics else mean
               for name, mean in zip(self.features, self.mean)]
        return (np.array(raw) - self.mean) / self.scale

    def predict(self, metrics: dict[str, float]) -> float:
        """Expected J of the clip's layers, in [0, 1]."""
        return float(sigmoid(self.bias + self._standardised(metrics) @ self.weights))

    def explain(self, metrics: dict[str, float], count: int = 2) -> str:
        """The signals that pull the prediction down most, e.g. "quality_ghost 0.61 (-1.2)"."""
        pulls = self._standardised(metrics) * self.weights
        worst = [i for i in np.argsort(pulls)[:count] if pulls[i] < 0]
        return ", ".join(f"{self.features[i]} {metrics.get(self.features[i], float('nan')):.3g} ({pulls[i]:+.2f})"
                         for i in worst) or "no signal below the calibration's average"


def transform(name: str, value: float) -> float:
    return math.log(max(value, LOG_FLOOR)) if name in LOGGED else float(value)


def sigmoid(x: np.ndarray | float) -> np.ndarray | float:
    return 1 / (1 + np.exp(-x))


def fit(rows: list[dict[str, float]], targets: list[float], penalty: float = 1.0,
        features: tuple[str, ...] = FEATURES, notes: dict | None = None) -> GateModel:
    """A gate model fitted to `rows` of metrics and their true J (`targets`, in [0, 1]).

    Minimises the cross-entropy of the fractional targets plus `penalty` times the squared
    weights, summed over the clips; signals missing from a row take their mean.
    """
    if len(rows) != len(targets) or len(rows) < 4:
        raise ValueError(f"need at least 4 clips with a J each, got {len(rows)} rows and {len(targets)} targets")
    present = [[transform(f, r[f]) for r in rows if f in r] for f in features]
    mean = np.array([np.mean(v) if v else 0.0 for v in present])
    scale = np.array([np.std(v) if len(v) > 1 and np.std(v) > 1e-9 else 1.0 for v in present])
    x = np.array([[transform(f, r[f]) if f in r else m for f, m in zip(features, mean)] for r in rows])
    x = (x - mean) / scale
    y = np.clip(np.asarray(targets, np.float64), 1e-4, 1 - 1e-4)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        p = sigmoid(theta[0] + x @ theta[1:])
        value = -np.sum(y * np.log(p) + (1 - y) * np.log(1 - p)) + penalty * np.sum(theta[1:] ** 2)
        gradient = np.concatenate([[np.sum(p - y)], x.T @ (p - y) + 2 * penalty * theta[1:]])
        return float(value), gradient

    theta = minimize(loss, np.zeros(len(features) + 1), jac=True, method="L-BFGS-B").x
    return GateModel(list(features), mean.tolist(), scale.tolist(), theta[1:].tolist(), float(theta[0]),
                     notes or {})
