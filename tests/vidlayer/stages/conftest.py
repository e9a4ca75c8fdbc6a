"""Fixtures of the tests of the chat-VLM stages (caption `vlm`, qc `vlm`)."""

from collections.abc import Callable
from pathlib import Path

import pytest

from vidlayer.random_models.vlm import write_tiny_vlm
from vidlayer.stages.vlm_common import VlmStage


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory) -> Path:
    return write_tiny_vlm(tmp_path_factory.mktemp("vlm"))


@pytest.fixture
def scripted() -> Callable[[VlmStage, list[list[str]]], list[tuple[int, bool]]]:
    """A function that replaces a stage's model with `answers` (one list per generate call) and
    returns the list the calls' (batch size, sampled) are appended to."""

    def script(stage: VlmStage, answers: list[list[str]]) -> list[tuple[int, bool]]:
        calls = []

        def generate(conversations, sample):
            calls.append((len(conversations), sample))
            batch = answers[len(calls) - 1]
            assert len(batch) == len(conversations)
            return batch

        stage._generate = generate
        return calls

    return script
