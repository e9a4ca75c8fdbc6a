import pytest
import torch
from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

from layert2v.positions import axis_split, rotary_frequencies


def test_concat_is_the_backbones_own_rope():
    rope = WanRotaryPosEmbed(32, (1, 2, 2), 1024)
    cos, sin = rope(torch.zeros(1, 16, 3 * 5, 8, 10))
    cos2, sin2 = rotary_frequencies("concat", 32, 3, (5, 4, 5))
    assert torch.equal(cos, cos2) and torch.equal(sin, sin2)


def test_aligned_repeats_one_layers_positions():
    cos, _ = rotary_frequencies("aligned", 32, 3, (5, 4, 5))
    one, _ = rotary_frequencies("concat", 32, 1, (5, 4, 5))
    assert torch.equal(cos, one.repeat(1, 3, 1, 1))


def test_4d_tells_layers_apart_at_the_same_frame():
    cos, _ = rotary_frequencies("4d", 32, 3, (5, 4, 5))
    per_layer = cos[0, :, 0].unflatten(0, (3, -1))
    assert not torch.equal(per_layer[0], per_layer[1])
    layer_dims = axis_split(32, with_layer_axis=True)[0]
    # Beyond the layer channels, every layer carries the same (t, h, w) code.
    assert torch.equal(per_layer[0][:, layer_dims:], per_layer[2][:, layer_dims:])


@pytest.mark.parametrize("head_dim", [32, 64, 128])
def test_axis_splits_fill_the_head(head_dim):
    assert sum(axis_split(head_dim, False)) == head_dim
    split = axis_split(head_dim, True)
    assert sum(split) == head_dim and all(d % 2 == 0 and d > 0 for d in split)
    if head_dim == 128:
        assert split == [8, 40, 40, 40]


def test_unknown_mode():
    with pytest.raises(ValueError, match="position mode"):
        rotary_frequencies("5d", 32, 1, (1, 1, 1))
