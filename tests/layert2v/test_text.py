"""TextEncoder on a tiny random UMT5 written in Wan's folder layout."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from diffusers import WanPipeline

from layert2v.text import TextEncoder, write_tiny_text_encoder

PROMPTS = ["A red fox runs across a snowy field at dawn.", "A small cat sleeps."]


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("wan")
    write_tiny_text_encoder(path)
    return path


@pytest.fixture(scope="module")
def encoder(wan_dir) -> TextEncoder:
    return TextEncoder.from_pretrained(wan_dir)


def token_count(encoder: TextEncoder, prompt: str) -> int:
    return len(encoder.tokenizer(prompt).input_ids)


def test_loads_wan_folder_layout(wan_dir, encoder):
    assert (wan_dir / "text_encoder" / "model.safetensors").is_file()
    assert (wan_dir / "tokenizer" / "tokenizer.json").is_file()
    assert encoder.dim == 32
    assert encoder.tokenizer.pad_token_id == 0
    assert encoder.tokenizer("a cat").input_ids[-1] == encoder.tokenizer.eos_token_id


def test_shape_and_zero_padding(encoder):
    embeds = encoder.encode(PROMPTS, max_length=24)
    assert embeds.shape == (2, 24, 32) and embeds.dtype == torch.float32
    for row, prompt in zip(embeds, PROMPTS):
        n = token_count(encoder, prompt)
        assert 1 < n < 24
        assert (row[:n].abs().sum(-1) > 0).all()
        assert (row[n:] == 0).all()


def test_matches_wan_pipeline(encoder):
    prompts = PROMPTS + ["  A  red\n fox &amp; a cat "]
    pipe = SimpleNamespace(tokenizer=encoder.tokenizer, text_encoder=encoder.model, _execution_device="cpu")
    reference = WanPipeline._get_t5_prompt_embeds(pipe, prompts, max_sequence_length=24)  # unbound: self is `pipe`
    assert torch.equal(encoder.encode(prompts, max_length=24), reference)


def test_whitespace_is_cleaned(encoder):
    assert torch.equal(encoder.encode(["  A  red\n fox "], 16), encoder.encode(["A red fox"], 16))


def test_different_prompts_differ(encoder):
    a, b = encoder.encode(["A red fox runs.", "A blue fox runs."], 16)
    assert not torch.allclose(a, b)


def test_truncation(encoder):
    long_prompt = " ".join(PROMPTS * 10)
    assert token_count(encoder, long_prompt) > 8
    embeds = encoder.encode([long_prompt], max_length=8)
    assert embeds.shape == (1, 8, 32)
    assert (embeds[0].abs().sum(-1) > 0).all()


def test_rows_do_not_depend_on_repetition_or_batch(encoder):
    alone = encoder.encode(PROMPTS[:1], 24)
    assert torch.equal(encoder.encode(PROMPTS[:1], 24), alone)
    torch.testing.assert_close(encoder.encode(PROMPTS, 24)[:1], alone, atol=1e-6, rtol=0)
    torch.testing.assert_close(encoder.encode(PROMPTS[::-1], 24)[1:], alone, atol=1e-6, rtol=0)


def test_dtype_follows_the_encoder(wan_dir):
    embeds = TextEncoder.from_pretrained(wan_dir, dtype=torch.bfloat16).encode(PROMPTS, 16)
    assert embeds.dtype == torch.bfloat16


def test_write_tiny_text_encoder_is_deterministic(tmp_path, encoder):
    for name, seed in [("a", 0), ("b", 0), ("c", 1)]:
        write_tiny_text_encoder(tmp_path / name, seed=seed)
    files = ["text_encoder/model.safetensors", "tokenizer/tokenizer.json"]
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    embeds = {name: TextEncoder.from_pretrained(tmp_path / name).encode(PROMPTS, 16) for name in "abc"}
    assert torch.equal(embeds["a"], embeds["b"])
    assert torch.equal(embeds["a"], encoder.encode(PROMPTS, 16))
    assert not torch.allclose(embeds["a"], embeds["c"])


def test_extra_words_become_whole_tokens(tmp_path, encoder):
    write_tiny_text_encoder(tmp_path, words=["heron", "lagoon"])
    extended = TextEncoder.from_pretrained(tmp_path)
    assert token_count(extended, "heron lagoon") == 3
    assert token_count(encoder, "heron lagoon") > 3  # spelled out in characters without them
