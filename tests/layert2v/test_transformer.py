import pytest
import torch
from diffusers import WanTransformer3DModel

from layert2v.attention import LayerSelfAttnProcessor
from layert2v.layout import Layout
from layert2v.transformer import LayeredWanTransformer


class DenseMaskProcessor(LayerSelfAttnProcessor):
    """Reference: Wan's own attention processor with an explicit [visual, text] visibility mask."""

    def __init__(self, state, mask: torch.Tensor):
        super().__init__(state)
        self.mask = mask

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        return super().__call__(attn, hidden_states, encoder_hidden_states, self.mask, rotary_emb)


def dense_mask(layout: Layout, tokens_per_layer: int, prompt_len: int) -> torch.Tensor:
    table = layout.visibility()
    return table.repeat_interleave(tokens_per_layer, 0).repeat_interleave(prompt_len, 1)


def randomise_layer_table(model, seed=1):
    with torch.no_grad():
        model.layer_modulation.copy_(torch.randn(model.layer_modulation.shape, generator=torch.Generator().manual_seed(seed)))


def test_zero_table_and_no_routing_is_the_base_model(tiny_transformer, random_inputs):
    model = tiny_transformer(layer_routing=False)
    base = WanTransformer3DModel.from_config(model.backbone.config)
    base.load_state_dict(model.backbone.state_dict())
    layout = Layout(2)
    latents, timesteps, prompts = random_inputs(model, layout)
    with torch.no_grad():
        layered = model(latents, timesteps, prompts, layout)
        plain = base(latents, timesteps, prompts.flatten(1, 2), return_dict=False)[0]
    torch.testing.assert_close(layered, plain, rtol=1e-5, atol=1e-5)


def test_layer_table_changes_each_layer_type(tiny_transformer, random_inputs):
    model = tiny_transformer(layer_routing=False)
    layout = Layout(1)
    latents, timesteps, prompts = random_inputs(model, layout)
    with torch.no_grad():
        before = layout.unpack(model(latents, timesteps, prompts, layout))
        model.layer_modulation[3].fill_(0.5)  # alpha rows only
        after = layout.unpack(model(latents, timesteps, prompts, layout))
    assert not torch.allclose(before["alpha0"], after["alpha0"])
    # Self-attention mixes layers, so others move too, but far less than the modulated layer itself.
    assert (after["alpha0"] - before["alpha0"]).abs().mean() > 3 * (after["full"] - before["full"]).abs().mean()


@pytest.mark.parametrize("layer_adaln", [True, False])
def test_the_layer_table_acts_only_with_layer_adaln(tiny_transformer, random_inputs, layer_adaln):
    model = tiny_transformer(layer_adaln=layer_adaln)
    layout = Layout(1)
    inputs = random_inputs(model, layout)
    with torch.no_grad():
        zero = model(*inputs, layout)
    randomise_layer_table(model)
    out = model(*inputs, layout)
    assert torch.equal(out, zero) != layer_adaln
    out.pow(2).mean().backward()
    assert (model.layer_modulation.grad is not None) == layer_adaln


@pytest.mark.parametrize(("joint", "positions"), [(True, "concat"), (False, "concat"), (False, "aligned"),
                                                  (False, "4d")])
def test_without_joint_attention_a_layer_ignores_the_others(tiny_transformer, random_inputs, joint, positions):
    model = tiny_transformer(joint_attention=joint, positions=positions)
    layout = Layout(1)
    latents, timesteps, prompts = random_inputs(model, layout)
    layers = layout.unpack(latents)
    layers["background"] = torch.randn(layers["background"].shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = model(latents, timesteps, prompts, layout)
        edited = model(layout.pack(layers), timesteps, prompts, layout)
    assert out.shape == latents.shape
    full, edited_full = layout.unpack(out)["full"], layout.unpack(edited)["full"]
    if joint:
        assert (full - edited_full).abs().max() > 1e-3
    else:
        torch.testing.assert_close(full, edited_full)


@pytest.mark.parametrize("positions", ["concat", "aligned"])
def test_independent_layers_are_the_backbone_run_on_each_layer_alone(tiny_transformer, random_inputs, positions):
    """Both switches and routing off: each layer is the plain backbone's output for that layer
    alone, with its own timestep and the backbone's positions for a one-layer video."""
    model = tiny_transformer(layer_routing=False, layer_adaln=False, joint_attention=False, positions=positions)
    randomise_layer_table(model)  # unused: must not matter
    base = WanTransformer3DModel.from_config(model.backbone.config)
    base.load_state_dict(model.backbone.state_dict())
    layout = Layout(1)
    latents, _, prompts = random_inputs(model, layout)
    timesteps = torch.tensor([[900.0, 600.0, 300.0, 0.0], [100.0, 200.0, 300.0, 400.0]])
    with torch.no_grad():
        out = layout.unpack(model(latents, timesteps, prompts, layout))
        for layer, (name, alone) in enumerate(layout.unpack(latents).items()):
            plain = base(alone, timesteps[:, layer], prompts.flatten(1, 2), return_dict=False)[0]
            torch.testing.assert_close(out[name], plain, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_routed_cross_attention_equals_dense_mask_reference(tiny_transformer, random_inputs, k):
    layout = Layout(k)
    routed = tiny_transformer(layer_routing=True)
    randomise_layer_table(routed)
    reference = tiny_transformer(layer_routing=False)
    reference.load_state_dict(routed.state_dict())
    frames, size, text_len = 2, 6, 4
    tokens = frames * (size // 2) ** 2
    latents, timesteps, prompts = random_inputs(routed, layout, frames=frames, size=size, text_len=text_len)
    with torch.no_grad():
        out = routed(latents, timesteps, prompts, layout)
        unrouted = reference(latents, timesteps, prompts, layout)
        mask = dense_mask(layout, tokens, text_len)
        for block in reference.backbone.blocks:
            block.attn2.set_processor(DenseMaskProcessor(reference.layer_state, mask))
        expected = reference(latents, timesteps, prompts, layout)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert (out - unrouted).abs().max() > 1e-3  # the mask matters


def test_background_ignores_the_foreground_prompt_but_full_does_not(tiny_transformer, random_inputs):
    model = tiny_transformer()
    layout = Layout(1)
    latents, timesteps, prompts = random_inputs(model, layout, batch=1)
    edited = prompts.clone()
    edited[:, 2] = torch.randn_like(edited[:, 2])  # a different foreground prompt
    model.backbone.blocks = model.backbone.blocks[:1]  # one block: no self-attention path back from fg to bg
    with torch.no_grad():
        a = layout.unpack(model(latents, timesteps, prompts, layout))
        b = layout.unpack(model(latents, timesteps, edited, layout))
    assert torch.equal(a["background"], b["background"])
    assert not torch.allclose(a["full"], b["full"])
    assert not torch.allclose(a["fg0"], b["fg0"])


def test_per_layer_timesteps_are_per_layer(tiny_transformer, random_inputs):
    model = tiny_transformer()
    layout = Layout(1)
    latents, _, prompts = random_inputs(model, layout, batch=1)
    t = torch.tensor([[700.0, 700.0, 700.0, 700.0]])
    with torch.no_grad():
        shared = model(latents, t[:, 0], prompts, layout)
        same = model(latents, t, prompts, layout)
        t[0, 0] = 0.0  # full video given clean
        conditioned = model(latents, t, prompts, layout)
    torch.testing.assert_close(shared, same)
    assert not torch.allclose(layout.unpack(shared)["full"], layout.unpack(conditioned)["full"])
    with pytest.raises(ValueError, match="timesteps"):
        model(latents, torch.zeros(1, 3), prompts, layout)


@pytest.mark.parametrize("positions", ["concat", "aligned", "4d"])
def test_position_variants_run_and_differ(tiny_transformer, random_inputs, positions):
    layout = Layout(1)
    model = tiny_transformer(positions=positions)
    latents, timesteps, prompts = random_inputs(model, layout)
    with torch.no_grad():
        out = model(latents, timesteps, prompts, layout)
        model.register_to_config(positions="concat")
        concat = model(latents, timesteps, prompts, layout)
    assert out.shape == latents.shape
    assert torch.equal(out, concat) == (positions == "concat")


def test_gradients_reach_layer_table_and_lora(tiny_transformer, random_inputs):
    model = tiny_transformer()
    model.add_lora(rank=4)
    model.requires_grad_(False)
    trainable = [p for n, p in model.named_parameters() if "lora" in n or n == "layer_modulation"]
    for p in trainable:
        p.requires_grad_(True)
    layout = Layout(1)
    latents, timesteps, prompts = random_inputs(model, layout)
    model(latents, timesteps, prompts, layout).pow(2).mean().backward()
    assert model.layer_modulation.grad.abs().sum() > 0
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert len(lora_b) == 2 * (4 + 4 + 2)  # blocks x (self-attn q,k,v,out + cross-attn q,k,v,out + ffn in,out)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_b)
    assert all(p.grad is None for n, p in model.named_parameters() if "lora" not in n and n != "layer_modulation")


@pytest.mark.parametrize("joint", [True, False])
def test_gradient_checkpointing_gives_the_same_gradients(tiny_transformer, random_inputs, joint):
    layout = Layout(1)
    grads = []
    for checkpointing in (False, True):
        model = tiny_transformer(joint_attention=joint)
        randomise_layer_table(model)
        if checkpointing:
            model.enable_gradient_checkpointing()
        latents, timesteps, prompts = random_inputs(model, layout)
        model(latents, timesteps, prompts, layout).pow(2).mean().backward()
        grads.append(model.layer_modulation.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize("options", [dict(positions="aligned"),
                                     dict(positions="4d", layer_adaln=False, joint_attention=False)])
def test_save_pretrained_round_trip(tiny_transformer, random_inputs, tmp_path, options):
    model = tiny_transformer(**options)
    randomise_layer_table(model)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    loaded = LayeredWanTransformer.from_pretrained(tmp_path)
    assert {k: loaded.config[k] for k in options} == options
    layout = Layout(2)
    inputs = random_inputs(model, layout)
    with torch.no_grad():
        torch.testing.assert_close(loaded(*inputs, layout), model(*inputs, layout), rtol=0, atol=0)


def test_lora_and_layer_weights_round_trip(tiny_transformer, random_inputs, tmp_path):
    model = tiny_transformer()
    model.add_lora(rank=4)
    randomise_layer_table(model)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.1)
    model.save_layer_weights(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layer_weights.safetensors", "pytorch_lora_weights.safetensors"]
    fresh = tiny_transformer()  # same seed: same base weights, as when reloading a frozen backbone
    fresh.load_layer_weights(tmp_path)
    layout = Layout(1)
    inputs = random_inputs(model, layout)
    with torch.no_grad():
        torch.testing.assert_close(fresh(*inputs, layout), model(*inputs, layout))


def test_from_wan_loads_a_plain_wan_folder(tiny_checkpoint, random_inputs):
    model = LayeredWanTransformer.from_wan(tiny_checkpoint, positions="4d")
    plain = WanTransformer3DModel.from_pretrained(tiny_checkpoint, subfolder="transformer")
    assert torch.equal(model.backbone.proj_out.weight, plain.proj_out.weight)
    assert model.layer_modulation.abs().sum() == 0 and model.config.positions == "4d"
    layout = Layout(1)
    with torch.no_grad():
        assert model(*random_inputs(model, layout), layout).isfinite().all()
