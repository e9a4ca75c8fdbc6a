"""Wan's UMT5 text encoder, loaded from a local diffusers-format Wan folder."""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from diffusers.pipelines.wan.pipeline_wan import prompt_clean
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel


class TextEncoder(torch.nn.Module):
    """Tokenizer + UMT5 encoder producing prompt embeddings exactly as `WanPipeline` does."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, model: UMT5EncoderModel) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.model = model.eval().requires_grad_(False)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        subfolder_text_encoder: str = "text_encoder",
        subfolder_tokenizer: str = "tokenizer",
        dtype: torch.dtype = torch.float32,
    ) -> TextEncoder:
        """Load from local files only; safetensors only, so no pickle is ever unpickled."""
        tokenizer = AutoTokenizer.from_pretrained(path, subfolder=subfolder_tokenizer, local_files_only=True)
        model = UMT5EncoderModel.from_pretrained(
            path, subfolder=subfolder_text_encoder, dtype=dtype, local_files_only=True, use_safetensors=True
        )
        return cls(tokenizer, model)

    @property
    def dim(self) -> int:
        return self.model.config.d_model

    def encode_slots(self, rows: Sequence[Sequence[str]], max_length: int) -> torch.Tensor:
        """[B, P, S, D] for B rows of P prompt slots each, in one encoder call."""
        return self.encode([text for row in rows for text in row], max_length).unflatten(0, (len(rows), -1))

    @torch.no_grad()
    def encode(self, prompts: list[str], max_length: int) -> torch.Tensor:
        """Embed prompts to [B, max_length, dim] in the encoder's dtype.

        Follows `WanPipeline._get_t5_prompt_embeds`: the embeddings past each prompt's true token count
        (eos included) are zeroed, so a prompt's rows do not depend on padding or on its batch mates.
        """
        tokens = self.tokenizer(
            [prompt_clean(p) for p in prompts],
            padding="max_length",
            max_length=max_length,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        device = self.model.device
        mask = tokens.attention_mask.to(device)
        hidden = self.model(tokens.input_ids.to(device), mask).last_hidden_state
        return hidden * mask.gt(0).unsqueeze(-1).to(hidden.dtype)


# Caption-like text whose words become whole tokens of the tiny tokenizer; other words fall back to characters.
_CORPUS = """
A red fox runs across a snowy field at dawn. The camera slowly pans over a quiet city street at night.
A woman in a blue dress dances in the rain while people watch. Two dogs play with a ball on a sunny beach.
A man rides a bicycle through a green park. Waves crash against dark rocks under a cloudy sky.
A small cat sleeps on a wooden table next to a window. The background is a blurred forest with tall trees.
"""


def _tiny_tokenizer(extra_words: Iterable[str] = ()) -> PreTrainedTokenizerFast:
    """A T5-style Unigram tokenizer with a fixed vocabulary: built, not trained, so it is byte-for-byte reproducible.

    `extra_words` become whole tokens too (a domain's vocabulary, e.g. the toy captions').
    """
    words = sorted(set(re.findall(r"[A-Za-z]+", _CORPUS)) | set(extra_words))
    chars = sorted(set(string.printable) - set(string.whitespace))
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -5.0)]
    vocab += [("\u2581" + w, -2.0) for w in words] + [(c, -10.0) for c in chars]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=512
    )


def write_tiny_text_encoder(path: Path, seed: int = 0, words: Iterable[str] = ()) -> None:
    """Write a random tiny UMT5 and its tokenizer in Wan's folder layout, for tests and smoke runs; `words` are
    tokenized whole, so each gets its own (random) embedding instead of being spelled out in characters."""
    tokenizer = _tiny_tokenizer(words)
    config = UMT5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2, dropout_rate=0.0
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = UMT5EncoderModel(config)
    tokenizer.save_pretrained(Path(path) / "tokenizer")
    model.save_pretrained(Path(path) / "text_encoder", safe_serialization=True)
