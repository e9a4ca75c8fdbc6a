import torch
import torch.nn.functional as F

from layert2v.alpha import alpha_loss, alpha_metrics, edge_magnitude


def step_matte(blur: int = 0) -> torch.Tensor:
    alpha = torch.zeros(1, 1, 3, 32, 32)
    alpha[..., 8:24, 8:24] = 1.0
    for _ in range(blur):
        frames = alpha[0].transpose(0, 1)
        alpha = F.avg_pool2d(frames, 3, stride=1, padding=1, count_include_pad=False).transpose(0, 1)[None]
    return alpha


def test_edges_are_found_only_at_the_boundary():
    edges = edge_magnitude(step_matte())
    assert (edges[..., 16, 16] < 1e-5).all() and (edges[..., 2, 2] < 1e-5).all()
    assert (edges[..., 16, 8] > 0.4).all()


def test_identical_mattes_score_perfectly():
    alpha = step_matte()
    loss, parts = alpha_loss(alpha, alpha)
    assert loss == 0 and parts == {"pixel": 0.0, "edge": 0.0}
    metrics = alpha_metrics(alpha, alpha)
    assert metrics["alpha_mae"] == 0 and abs(metrics["edge_sharpness"] - 1) < 1e-6


def test_blur_lowers_sharpness_and_raises_the_edge_loss():
    truth, soft, softer = step_matte(), step_matte(blur=2), step_matte(blur=6)
    assert alpha_metrics(softer, truth)["edge_sharpness"] < alpha_metrics(soft, truth)["edge_sharpness"] < 1
    assert alpha_metrics(softer, truth)["boundary_mae"] > alpha_metrics(soft, truth)["boundary_mae"]
    assert alpha_loss(softer, truth)[1]["edge"] > alpha_loss(soft, truth)[1]["edge"]


def test_balancing_makes_the_empty_matte_a_bad_answer():
    truth = torch.zeros(1, 1, 3, 32, 32)
    truth[..., 12:18, 12:18] = 1.0  # a small subject: 3.5% of the frame
    empty = torch.zeros_like(truth)
    plain = alpha_loss(empty, truth, edge_weight=0, balanced=False)[0]
    balanced = alpha_loss(empty, truth, edge_weight=0)[0]
    assert balanced > 10 * plain
    assert alpha_loss(truth, truth)[0] == 0
