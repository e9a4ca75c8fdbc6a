"""A tiny, randomly initialised image-text-to-text model for the `vlm` backends of `caption` and `qc`.

The architecture is LLaVA (a CLIP vision tower, a two-layer projector and a Llama decoder), which
`AutoModelForImageTextToText` loads, with its real processor: a CLIP image processor (the PIL
one, so that torchvision is not needed) and a byte-level BPE tokenizer built here from a small
word list, with a ChatML chat template that puts one `<image>` token per image entry, as the
multi-image LLaVA-Interleave checkpoints do. Random weights answer with garbage: the folder
exercises loading, the chat template, batching and generation, not captioning quality.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor,
                          PreTrainedTokenizerFast)
from transformers.convert_slow_tokenizer import bytes_to_unicode
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from vidlayer.random_models import spelling_merges

PAD, BEGIN, END, IMAGE = "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"
# Words the tokenizer knows whole (the stage's prompt, JSON punctuation and common captions);
# anything else is spelled out in bytes.
WORDS = ("a", "an", "the", "and", "of", "in", "on", "over", "with", "for", "one", "each", "is", "it", "its",
         "video", "frames", "foreground", "background", "layer", "layers", "caption", "captions", "full", "grey",
         "alone", "removed", "scene", "subject", "json", "object", "JSON", "string", "strings", "list", "only",
         "cat", "dog", "man", "woman", "person", "ball", "car", "bird", "red", "blue", "green", "walking",
         "running", "moving", "sliding", "floor", "wall", "sky", "grass", "street", '{"', '":', '",', '"]', '"}')
IMAGE_SIZE = 32  # pixels of the square image the vision tower sees
PATCH_SIZE = 8  # so each image becomes (32 / 8)^2 = 16 image tokens
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def write_tiny_vlm(folder: Path, seed: int = 0) -> Path:
    """Save a random tiny LLaVA and its processor to `folder` with `save_pretrained`; return `folder`."""
    folder = Path(folder)
    torch.manual_seed(seed)
    tokenizer = _tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in (PAD, BEGIN, END, IMAGE)}
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=32)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                       bos_token_id=ids[BEGIN], eos_token_id=ids[END], pad_token_id=ids[PAD])
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=ids[IMAGE],
                         vision_feature_select_strategy="default", vision_feature_layer=-1)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = ids[PAD]
    model.generation_config.eos_token_id = ids[END]
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                                            crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    # "default" drops CLIP's class token, so one image is exactly its patches (the +1 and -1 cancel).
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH_SIZE,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=CHAT_TEMPLATE, image_token=IMAGE)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE: the special tokens, every byte, then merges that spell each of `WORDS`
    (alone and after a space), so any text encodes and the prompt stays short."""
    byte_char = bytes_to_unicode()
    vocab = {token: i for i, token in enumerate([PAD, BEGIN, END, IMAGE, *byte_char.values()])}
    merges = spelling_merges(([byte_char[b] for b in spelled.encode()] for word in WORDS for spelled in (word, " " + word)),
                             vocab)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([PAD, BEGIN, END, IMAGE])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BEGIN, eos_token=END, pad_token=PAD,
                                   extra_special_tokens={"image_token": IMAGE})
