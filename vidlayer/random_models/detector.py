"""A tiny, randomly initialised open-vocabulary detector for the `ground` stage's `detector` backend.

Both families that `AutoModelForZeroShotObjectDetection` loads for grounding are written: OWLv2
(CLIP text and vision towers, a CLIP byte-level BPE tokenizer) and Grounding DINO (a Swin
backbone, a BERT text encoder and its WordPiece tokenizer). The tokenizers are built here from a
small word list, so nothing is downloaded. Random weights give random boxes and scores: the
folder exercises loading, pre- and post-processing and batching, not detection quality.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (BertConfig, BertTokenizer, CLIPTokenizer, GroundingDinoConfig,
                          GroundingDinoForObjectDetection, GroundingDinoImageProcessorPil, GroundingDinoProcessor,
                          Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessorPil, Owlv2Processor, SwinConfig)

from vidlayer.random_models import spelling_merges

FAMILIES = ("owlv2", "grounding_dino")
# Words the tokenizers know whole (the captions `vidlayer synth` writes and common subjects);
# any other word is spelled out in characters (BPE) or becomes [UNK] pieces (WordPiece).
WORDS = ("a", "an", "the", "and", "in", "of", "on", "to", "with", "while", "front", "left", "right", "up", "down",
         "cat", "dog", "man", "woman", "person", "ball", "car", "bird", "horse", "motorbike", "helmet", "space",
         "colour", "wheel", "red", "blue", "green", "shirt", "moving", "sliding", "walking", "running", "bobbing",
         "growing", "gently")
IMAGE_SIZE = 64  # pixels of the square OWLv2 input; Grounding DINO's short side
TEXT_LENGTH = 16  # tokens per OWLv2 query, as in the released checkpoints


def write_tiny_detector(folder: Path, family: str = "owlv2", seed: int = 0) -> Path:
    """Save a random tiny `family` detector and its processor to `folder` with `save_pretrained`; return `folder`."""
    if family not in FAMILIES:
        raise ValueError(f"family {family!r} is not one of {', '.join(FAMILIES)}")
    folder = Path(folder)
    torch.manual_seed(seed)
    model, processor = _owlv2() if family == "owlv2" else _grounding_dino()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _owlv2() -> tuple[Owlv2ForObjectDetection, Owlv2Processor]:
    tokenizer = _clip_tokenizer()
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=TEXT_LENGTH, pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  image_size=IMAGE_SIZE, patch_size=8)
    model = Owlv2ForObjectDetection(Owlv2Config(text_config=text, vision_config=vision, projection_dim=32)).eval()
    # The heads are initialised with std 1 (`initializer_factor`), which puts every box on the image's
    # corner and every score at 0 or 1. Trained heads nudge a box from its patch (the box bias) and
    # score by similarity, so small weights give boxes spread over the image and scores between.
    with torch.no_grad():
        for layer in [*model.box_head.modules(), *model.class_head.modules()]:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.normal_(std=0.02)
    image_processor = Owlv2ImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return model, Owlv2Processor(image_processor=image_processor, tokenizer=tokenizer)


def _grounding_dino() -> tuple[GroundingDinoForObjectDetection, GroundingDinoProcessor]:
    tokenizer = _bert_tokenizer()
    text = BertConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, max_position_embeddings=64)
    backbone = SwinConfig(image_size=IMAGE_SIZE, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4],
                          window_size=4, out_indices=[2, 3, 4])
    config = GroundingDinoConfig(backbone_config=backbone, text_config=text, d_model=32, num_queries=30,
                                 encoder_layers=1, decoder_layers=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                                 encoder_attention_heads=4, decoder_attention_heads=4, num_feature_levels=4,
                                 encoder_n_points=2, decoder_n_points=2, max_text_len=64)
    model = GroundingDinoForObjectDetection(config).eval()
    # A box's score for a token is the dot product of two layer-normed features, which at random
    # puts every score at 0 or 1; a smaller scale on the decoder's output spreads them in between.
    with torch.no_grad():
        model.model.decoder.layer_norm.weight.mul_(0.2)
    image_processor = GroundingDinoImageProcessorPil(size={"shortest_edge": IMAGE_SIZE, "longest_edge": 2 * IMAGE_SIZE})
    return model, GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer)


def _clip_tokenizer() -> CLIPTokenizer:
    """CLIP's byte-level BPE: every byte alone and word-final, then merges that spell each of `WORDS`.

    The special tokens come last so that the end-of-text id is the largest, which is how the CLIP
    text tower finds it; "!" is id 0, the padding OWL models expect.
    """
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    alphabet = list(bytes_to_unicode().values())
    vocab = {token: i for i, token in enumerate(alphabet + [c + "</w>" for c in alphabet])}
    merges = spelling_merges(([*word[:-1], word[-1] + "</w>"] for word in WORDS), vocab)
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, pad_token="!", model_max_length=TEXT_LENGTH)


def _bert_tokenizer() -> BertTokenizer:
    """BERT's lower-case WordPiece over `WORDS`, single letters and the punctuation Grounding DINO's prompts use."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens = specials + [".", ",", "-", "'"] + letters + ["##" + c for c in letters] + [w for w in WORDS if len(w) > 1]
    return BertTokenizer(vocab={token: i for i, token in enumerate(dict.fromkeys(tokens))})
