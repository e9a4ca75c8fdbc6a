import pytest
import torch

from layert2v.layout import Layout, LayerType


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_pack_unpack_round_trip(k):
    layout = Layout(k)
    layers = {name: torch.randn(2, 16, 3, 4, 6) for name in layout.names}
    packed = layout.pack(layers)
    assert packed.shape == (2, 16, 3 * (2 + 2 * k), 4, 6)
    unpacked = layout.unpack(packed)
    assert list(unpacked) == list(layout.names)
    for name in layout.names:
        assert torch.equal(unpacked[name], layers[name])


def test_order_is_full_background_then_foreground_alpha_pairs():
    layout = Layout(2)
    assert layout.names == ("full", "background", "fg0", "alpha0", "fg1", "alpha1")
    assert layout.types == (LayerType.FULL, LayerType.BACKGROUND, LayerType.FOREGROUND, LayerType.ALPHA,
                            LayerType.FOREGROUND, LayerType.ALPHA)
    assert layout.prompt_names == ("full", "background", "fg0", "fg1")
    packed = layout.pack({name: torch.full((1, 1, 2, 1, 1), float(i)) for i, name in enumerate(layout.names)})
    assert packed[0, 0, :, 0, 0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


def test_visibility_is_the_papers_table():
    # rows: full, background, fg, alpha; columns: full, background, fg prompt
    assert Layout(1).visibility().tolist() == [
        [True, True, True],
        [True, True, False],
        [True, False, True],
        [True, False, True],
    ]


def test_each_foreground_sees_only_its_own_prompt():
    table = Layout(3).visibility()
    for k in range(3):
        for layer in (2 + 2 * k, 3 + 2 * k):
            assert table[layer].tolist() == [True, False] + [j == k for j in range(3)]
    assert table[0].all()


def test_bad_inputs_are_refused():
    layout = Layout(1)
    layers = {name: torch.zeros(1, 4, 2, 2, 2) for name in layout.names}
    with pytest.raises(ValueError, match="missing"):
        layout.pack({k: v for k, v in layers.items() if k != "alpha0"})
    with pytest.raises(ValueError, match="one latent shape"):
        layout.pack({**layers, "background": torch.zeros(1, 4, 3, 2, 2)})
    with pytest.raises(ValueError, match="multiple"):
        layout.unpack(torch.zeros(1, 4, 7, 2, 2))
    with pytest.raises(ValueError):
        Layout(0)
