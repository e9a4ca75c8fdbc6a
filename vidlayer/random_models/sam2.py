"""A tiny, randomly initialised SAM 2.1 for tests and demos of the `segment.sam2` backend.

It is SAM 2's own packaged `sam2.1_hiera_t` config with every size shrunk (128-pixel input, a
5-block, 4-stage Hiera of width 8, 32-channel features, one memory-attention layer, 16-channel
memories); what SAM 2 does not expose stays as built (the mask decoder's 2048-wide MLP), about
0.65M parameters (2.6 MB) in all. Every structural switch of the real model (high-resolution
features, object pointers, occlusion head, multimask tracking) is kept, so the stage runs the
same code paths.
"""

from __future__ import annotations

from pathlib import Path

import torch

IMAGE_SIZE = 128  # input pixels; features are 1/16 of it (8 x 8)
TRUNK_WIDTH = 8  # Hiera's first-stage channels, doubling at each of its 4 stages
WIDTH = 32  # neck, memory attention and SAM heads (the SAM heads' 8 heads need a multiple of 16)
MEMORY_WIDTH = 16  # memory features; a divisor of WIDTH (object pointers are split into WIDTH / this tokens)
IN_VIEW_LOGIT = 4.0  # bias of the occlusion head: objects stay in view (at chance, whole masks would vanish at random)


def write_tiny_sam2(folder: Path, seed: int = 0) -> Path:
    """Write `folder/config.yaml` (a sam2 model config) and `folder/model.safetensors` (its random
    weights, drawn from `seed` without touching the global RNG); returns `folder`."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from safetensors.torch import save_file

    import sam2

    cfg = OmegaConf.load(Path(sam2.__path__[0]) / "configs" / "sam2.1" / "sam2.1_hiera_t.yaml")
    model = cfg.model
    model.image_size = IMAGE_SIZE
    trunk = model.image_encoder.trunk
    trunk.embed_dim = TRUNK_WIDTH
    # One block per stage but two in the third, whose second (not a pooling block) attends globally.
    trunk.stages = [1, 1, 2, 1]
    trunk.global_att_blocks = [3]
    # Windows no larger than each stage's feature map (32, 16, 8, 4 at 128 pixels).
    trunk.window_spec = [8, 4, 4, 2]
    trunk.window_pos_embed_bkg_spatial_size = [4, 4]
    neck = model.image_encoder.neck
    neck.d_model = neck.position_encoding.num_pos_feats = WIDTH
    neck.backbone_channel_list = [TRUNK_WIDTH * 8, TRUNK_WIDTH * 4, TRUNK_WIDTH * 2, TRUNK_WIDTH]
    attention = model.memory_attention
    attention.d_model = attention.layer.d_model = WIDTH
    attention.num_layers = 1
    attention.layer.dim_feedforward = 2 * WIDTH
    feature_size = IMAGE_SIZE // 16
    for rope in (attention.layer.self_attention, attention.layer.cross_attention):
        rope.embedding_dim = WIDTH
        rope.feat_sizes = [feature_size, feature_size]
    attention.layer.cross_attention.kv_in_dim = MEMORY_WIDTH
    encoder = model.memory_encoder
    encoder.in_dim = encoder.mask_downsampler.embed_dim = encoder.fuser.layer.dim = WIDTH
    encoder.out_dim = encoder.position_encoding.num_pos_feats = MEMORY_WIDTH
    encoder.fuser.num_layers = 1

    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        network = instantiate(model, _recursive_=True)
    with torch.no_grad():
        network.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(IN_VIEW_LOGIT)
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, folder / "model.safetensors")
    OmegaConf.save(cfg, folder / "config.yaml")
    return folder
