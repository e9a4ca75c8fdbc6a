import pytest

from vidlayer.evaluation.speed import stage_rates


def test_rates_are_frames_over_seconds_of_written_samples_only():
    rows = [
        {"kind": "sample", "status": "written", "frames": 49, "timings": {"segment": 4.9, "matte": 0.49}},
        {"kind": "sample", "status": "written", "frames": 49, "timings": {"segment": 9.8, "matte": 0.49}},
        {"kind": "sample", "status": "dropped", "frames": 49, "timings": {"segment": 100.0}},
        {"kind": "input", "status": "written", "frames": None, "timings": {}},
    ]
    assert stage_rates(rows) == pytest.approx({"segment": 98 / 14.7, "matte": 100.0})
