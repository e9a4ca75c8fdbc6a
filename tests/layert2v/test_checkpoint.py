import logging

import pytest
import torch

from layert2v.checkpoint import (latest_checkpoint, load_checkpoint, optimizer_state, restore_optimizer,
                                 save_checkpoint)
from layert2v.runs import ConfigError


def test_nested_state_round_trips_through_safetensors_and_json(tmp_path):
    state = {"weights": {"a": torch.randn(3, 2), "b": torch.arange(4)}, "list": [torch.ones(1), 2, "x"],
             "scalar": 0.5, "none": None}
    path = save_checkpoint(tmp_path, 7, state)
    assert path.name == "step-0000007" and sorted(p.name for p in path.iterdir()) == ["state.json",
                                                                                       "state.safetensors"]
    step, loaded = load_checkpoint(path)
    assert step == 7 and loaded["scalar"] == 0.5 and loaded["none"] is None and loaded["list"][1:] == [2, "x"]
    assert torch.equal(loaded["weights"]["a"], state["weights"]["a"])
    assert torch.equal(loaded["list"][0], torch.ones(1))


def test_latest_ignores_unfinished_saves(tmp_path):
    save_checkpoint(tmp_path, 2, {"x": torch.zeros(1)})
    save_checkpoint(tmp_path, 10, {"x": torch.zeros(1)})
    (tmp_path / ".step-0000020.partial").mkdir()  # a save killed half-way
    (tmp_path / "step-0000030").mkdir()  # no state.json: never completed
    assert latest_checkpoint(tmp_path).name == "step-0000010"
    assert latest_checkpoint(tmp_path / "missing") is None


def truncate(path):
    path.write_bytes(path.read_bytes()[:-100])


@pytest.mark.parametrize("damage, reason", [
    (lambda p: truncate(p / "state.safetensors"), "not fully covered"),
    (lambda p: (p / "state.safetensors").unlink(), "FileNotFoundError"),
    (lambda p: (p / "state.json").write_text('{"step": 10, "sta'), "JSONDecodeError"),
])
def test_latest_skips_a_damaged_checkpoint_with_a_warning(tmp_path, caplog, damage, reason):
    save_checkpoint(tmp_path, 2, {"x": torch.zeros(100)})
    damage(save_checkpoint(tmp_path, 10, {"x": torch.ones(100)}))
    with caplog.at_level(logging.WARNING, logger="layert2v.checkpoint"):
        assert latest_checkpoint(tmp_path).name == "step-0000002"
    [record] = caplog.records
    assert "step-0000010" in record.getMessage() and reason in record.getMessage()


def test_latest_refuses_when_every_checkpoint_is_damaged(tmp_path):
    (save_checkpoint(tmp_path, 2, {"x": torch.zeros(100)}) / "state.json").write_text("")
    with pytest.raises(ConfigError, match="no checkpoint in .* step-0000002: JSONDecodeError"):
        latest_checkpoint(tmp_path)


def test_optimizer_state_resumes_identically(tmp_path):
    def make():
        torch.manual_seed(0)
        p = torch.nn.Parameter(torch.randn(4))
        return p, torch.optim.AdamW([p], lr=0.1)

    def step(p, opt):
        opt.zero_grad()
        (p ** 2).sum().backward()
        opt.step()

    p, opt = make()
    for _ in range(3):
        step(p, opt)
    save_checkpoint(tmp_path, 3, {"opt": optimizer_state(opt), "p": p})
    step(p, opt)
    q, opt2 = make()
    _, state = load_checkpoint(latest_checkpoint(tmp_path))
    with torch.no_grad():
        q.copy_(state["p"])
    restore_optimizer(opt2, state["opt"])
    step(q, opt2)
    assert torch.equal(p, q)
