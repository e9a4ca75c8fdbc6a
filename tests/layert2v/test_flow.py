import pytest
import torch

from layert2v.flow import (TASKS, flow_matching_loss, make_scheduler, sample_latents, sample_tasks, shift_sigmas,
                           task_mask)
from layert2v.layout import Layout


def test_shift_keeps_endpoints_and_moves_towards_noise():
    s = torch.tensor([0.0, 0.25, 0.5, 1.0])
    shifted = shift_sigmas(s, 5.0)
    assert shifted[0] == 0 and shifted[-1] == 1
    assert (shifted[1:3] > s[1:3]).all()
    assert torch.equal(shift_sigmas(s, 1.0), s)


def test_task_masks():
    layout = Layout(2)
    assert not task_mask(layout, "joint").any()
    assert task_mask(layout, "decompose").tolist() == [True, False, False, False, False, False]
    assert task_mask(layout, "background").tolist() == [False, False, True, True, True, True]
    assert task_mask(layout, "foreground").tolist() == [False, True, False, False, False, False]
    with pytest.raises(ValueError):
        task_mask(layout, "upscale")


def test_sample_tasks_follows_probabilities():
    picks = sample_tasks(4000, {"joint": 0.5, "decompose": 0.25, "foreground": 0.25}, torch.Generator().manual_seed(0))
    share = picks.count("joint") / len(picks)
    assert 0.46 < share < 0.54 and "background" not in picks
    with pytest.raises(ValueError):
        sample_tasks(1, {"joint": -1.0})
    with pytest.raises(ValueError):
        sample_tasks(1, {"dance": 1.0})
    assert set(TASKS) == {"joint", "decompose", "background", "foreground"}


class SpoiledFull:
    """The model, with garbage added to its prediction for the full video."""

    def __init__(self, model):
        self.model = model

    def __call__(self, latents, timesteps, prompts, layout):
        layers = layout.unpack(self.model(latents, timesteps, prompts, layout))
        layers["full"] = layers["full"] + 100.0
        return layout.pack(layers)


def test_loss_scores_only_generated_layers(tiny_transformer, random_inputs):
    model = tiny_transformer()
    layout = Layout(1)
    latents, _, prompts = random_inputs(model, layout)

    def loss(net, task):
        conditioning = task_mask(layout, task).expand(2, -1)
        return flow_matching_loss(net, latents, prompts, layout, conditioning,
                                  generator=torch.Generator().manual_seed(0))

    given_full, scores = loss(model, "decompose")
    assert list(scores) == ["background", "fg0", "alpha0"]
    assert torch.equal(loss(SpoiledFull(model), "decompose")[0], given_full)
    assert loss(SpoiledFull(model), "joint")[0] > loss(model, "joint")[0] + 1000
    given_full.backward()
    assert model.layer_modulation.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="at least one layer"):
        flow_matching_loss(model, latents, prompts, layout, torch.ones(2, layout.num_layers, dtype=torch.bool))


@pytest.mark.parametrize("scheduler", ["flow-euler", "unipc"])
def test_sampler_keeps_a_given_layer_exactly(tiny_transformer, scheduler):
    model = tiny_transformer()
    layout = Layout(2)
    g = torch.Generator().manual_seed(0)
    prompts = torch.randn(1, layout.num_prompts, 4, model.backbone.config.text_dim, generator=g)
    background = torch.randn(1, 16, 2, 4, 4, generator=g)
    out = sample_latents(model, make_scheduler(scheduler, 3.0), layout, (16, 2, 4, 4), prompts,
                         torch.zeros_like(prompts), guidance_scale=4.0, steps=3,
                         conditions={"background": background}, generator=g)
    layers = layout.unpack(out)
    assert torch.equal(layers["background"], background)
    assert all(layers[name].isfinite().all() and layers[name].std() > 0 for name in layout.names)


def test_sampler_is_seeded_and_guidance_one_skips_the_negative_pass(tiny_transformer):
    model = tiny_transformer()
    layout = Layout(1)
    prompts = torch.randn(1, layout.num_prompts, 4, model.backbone.config.text_dim)

    def run(negative, scale, seed=3):
        return sample_latents(model, make_scheduler("flow-euler", 3.0), layout, (16, 2, 4, 4), prompts, negative,
                              guidance_scale=scale, steps=3, generator=torch.Generator().manual_seed(seed))

    torch.testing.assert_close(run(None, 5.0), run(torch.zeros_like(prompts), 1.0))
    assert torch.equal(run(torch.zeros_like(prompts), 5.0), run(torch.zeros_like(prompts), 5.0))
    assert not torch.allclose(run(None, 5.0), run(torch.zeros_like(prompts), 5.0))
    assert not torch.allclose(run(None, 5.0), run(None, 5.0, seed=4))


def test_sampler_refuses_unknown_or_all_given_layers(tiny_transformer):
    model = tiny_transformer()
    layout = Layout(1)
    prompts = torch.randn(1, 3, 4, model.backbone.config.text_dim)
    latent = torch.zeros(1, 16, 2, 4, 4)
    with pytest.raises(ValueError, match="unknown layers"):
        sample_latents(model, make_scheduler("unipc", 3.0), layout, (16, 2, 4, 4), prompts, conditions={"fg3": latent})
    with pytest.raises(ValueError, match="nothing to sample"):
        sample_latents(model, make_scheduler("unipc", 3.0), layout, (16, 2, 4, 4), prompts,
                       conditions={name: latent for name in layout.names})
    with pytest.raises(ValueError, match="scheduler"):
        make_scheduler("ddim", 3.0)
