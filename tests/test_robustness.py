"""The robustness engine (DSRNA, thesis ch. 1): the Jacobian estimator against the explicit
Jacobian, certified margin bounds never above a margin an attack can reach (for every DARTS op,
both cell layouts, several seeds), CROWN at least as tight as IBP, gradients to alpha, and the
FGSM/PGD attacks against known optima."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from skillearn.robustness import (
    PixelSpace,
    accuracy,
    certified_radius,
    exact_jacobian_norm,
    fgsm,
    jacobian_norm,
    margin_lower_bound,
    pgd,
    robust_accuracy,
)
from skillearn.search_spaces.darts import PRIMITIVES, SpaceConfig, SuperNet


# ------------------------------------------------------------------------------------ jacobian
def tiny_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 5))


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_jacobian_estimate_is_unbiased_against_the_explicit_jacobian(norm):
    net = tiny_mlp()
    x = torch.randn(3, 1, 3, 4)
    exact = exact_jacobian_norm(net, x, norm)
    gen = torch.Generator().manual_seed(1)
    estimate = jacobian_norm(net, x, norm, n_proj=3000, create_graph=False, generator=gen)
    assert torch.allclose(estimate, exact, rtol=0.06), (estimate, exact)
    single = torch.stack([jacobian_norm(net, x, norm, n_proj=1, create_graph=False,
                                        generator=gen) for _ in range(5)])
    assert single.std(0).min() > 0  # one projection is a random estimate, not the exact value


def test_jacobian_norms_are_what_hoelder_needs():
    """l2: the squared Frobenius norm; linf: the entrywise l1 norm (dual of l_inf)."""
    net = nn.Linear(4, 3, bias=False)
    x = torch.randn(2, 4)
    w = net.weight.detach()
    assert torch.allclose(exact_jacobian_norm(net, x, "l2"), w.pow(2).sum().expand(2))
    assert torch.allclose(exact_jacobian_norm(net, x, "linf"), w.abs().sum().expand(2))


def test_jacobian_estimate_is_differentiable_in_the_weights():
    net = tiny_mlp()
    jacobian_norm(net, torch.randn(4, 1, 3, 4)).mean().backward()
    moved = [n for n, p in net.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert moved == ["1.weight", "1.bias", "3.weight"]  # the output bias does not change J


# ------------------------------------------------------------------------------------- bounds
def tiny_supernet(ops: tuple[str, ...], fused: bool, seed: int) -> SuperNet:
    """Three cells (the middle one reduces: strided ops, FactorizedReduce), eval-mode BN with
    running statistics that are not the identity, non-uniform alphas."""
    torch.manual_seed(seed)
    net = SuperNet(SpaceConfig(ops=ops, nodes=2, cells=3, channels=4, in_channels=1,
                               num_classes=4, stem_multiplier=1), fused=fused)
    with torch.no_grad():
        net.alpha_normal.normal_(0, 1)
        net.alpha_reduce.normal_(0, 1)
    net.train()
    for _ in range(3):
        net(torch.randn(16, 1, 6, 6))
    return net.eval()


def true_margin(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = net(x)
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return logits.gather(1, y[:, None])[:, 0] - others.amax(1)


def smallest_margin_found(net, x, y, eps: float, seed: int) -> torch.Tensor:
    """The lowest margin over 16 random points and a 15-step margin PGD in the eps-ball."""
    gen = torch.Generator().manual_seed(seed)
    n, draws = x.shape[0], 16
    with torch.no_grad():
        points = x.repeat(draws, 1, 1, 1)
        points = points + eps * (2 * torch.rand(points.shape, generator=gen) - 1)
        lowest = true_margin(net, points, y.repeat(draws)).view(draws, n).amin(0)
        lowest = torch.minimum(lowest, true_margin(net, x, y))
    x_adv = x + eps * (2 * torch.rand(x.shape, generator=gen) - 1)
    for _ in range(15):
        x_adv = x_adv.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(true_margin(net, x_adv, y).sum(), x_adv)
        x_adv = (x + (x_adv - eps / 6 * grad.sign() - x).clamp(-eps, eps)).detach()
        with torch.no_grad():
            lowest = torch.minimum(lowest, true_margin(net, x_adv, y))
    return lowest


def assert_sound_and_ordered(ops: tuple[str, ...], fused: bool, seed: int) -> None:
    net = tiny_supernet(ops, fused, seed)
    x = torch.randn(4, 1, 6, 6, generator=torch.Generator().manual_seed(seed))
    y = net(x).argmax(1)
    y[::3] = (y[::3] + 1) % 4  # misclassified examples too: their bound is negative
    for eps in (0.02, 0.1):
        found = smallest_margin_found(net, x, y, eps, seed)
        ibp = margin_lower_bound(net, x, y, eps, "ibp")
        crown = margin_lower_bound(net, x, y, eps, "crown")
        assert (ibp <= found + 1e-5).all(), (ops, eps, ibp, found)
        assert (crown <= found + 1e-5).all(), (ops, eps, crown, found)
        assert (crown >= ibp - 1e-5).all()


OP_SETS = [(op,) for op in PRIMITIVES if op != "none"] + [PRIMITIVES]


@pytest.mark.parametrize("ops", OP_SETS, ids=lambda ops: "+".join(ops) if len(ops) < 3 else "all")
def test_certified_bound_is_never_above_an_attained_margin(ops):
    """Every op alone and all together, fused cells, two seeds: a bound must never be wrong."""
    for seed in range(2):
        assert_sound_and_ordered(ops, True, seed)


def test_certified_bound_is_sound_on_edge_by_edge_cells():
    """The reference layout reads the same names the fused tensors are mapped to."""
    assert_sound_and_ordered(PRIMITIVES, False, 0)
    fused, edgewise = tiny_supernet(PRIMITIVES, True, 0), tiny_supernet(PRIMITIVES, False, 0)
    edgewise.load_state_dict(fused.edgewise_state_dict())
    x = torch.randn(3, 1, 6, 6)
    y = fused(x).argmax(1)
    assert torch.allclose(margin_lower_bound(fused, x, y, 0.05, "crown"),
                          margin_lower_bound(edgewise, x, y, 0.05, "crown"), atol=1e-5)


def test_bound_at_zero_radius_is_the_true_margin_and_crown_is_tighter():
    net = tiny_supernet(PRIMITIVES, True, 0)
    x = torch.randn(5, 1, 6, 6)
    y = net(x).argmax(1)
    exact = true_margin(net, x, y)
    for method in ("ibp", "crown"):
        assert torch.allclose(margin_lower_bound(net, x, y, 0.0, method), exact, atol=1e-5)
    ibp, crown = (margin_lower_bound(net, x, y, 0.05, m) for m in ("ibp", "crown"))
    assert (crown - ibp).mean() > 0.1 * (exact - ibp).mean()  # strictly tighter on average


def test_bound_stays_sound_on_an_ill_conditioned_supernet():
    """A searched supernet's eval-mode BNs (small running variances) amplify the radius ~1e9x;
    float32 rounding in the linear bounds is amplified alike. The bound must still never pass
    the true margin, and the certified radius (float64) must be verified."""
    net = tiny_supernet(PRIMITIVES, True, 0)
    with torch.no_grad():
        for name, buf in net.named_buffers():
            if name.endswith("running_var"):
                buf.fill_(1e-4)
    x = torch.randn(5, 1, 6, 6)
    y = net(x).argmax(1)
    exact = true_margin(net, x, y)
    for eps in (0.0, 1e-7, 1e-5):
        for method in ("ibp", "crown"):
            assert (margin_lower_bound(net, x, y, eps, method) <= exact + 1e-4 * exact.abs()).all()
    radius = certified_radius(net, x, y, "crown", min_eps=1e-12, steps=8)
    x64, net64 = x.double(), copy.deepcopy(net).double()
    assert (margin_lower_bound(net64, x64, y, radius.view(-1, 1, 1, 1), "crown") > 0).all()


@pytest.mark.parametrize("method", ["ibp", "crown"])
def test_bound_is_differentiable_in_alpha_and_weights(method):
    net = tiny_supernet(PRIMITIVES, True, 0)
    x = torch.randn(4, 1, 6, 6)
    margin_lower_bound(net, x, net(x).argmax(1), 0.05, method).mean().backward()
    for name in ("alpha_normal", "alpha_reduce", "stem.0.weight", "classifier.weight"):
        grad = dict(net.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    fused = [p for n, p in net.named_parameters() if ".bundles." in n and "dw1" in n]
    assert fused and any(p.grad is not None and p.grad.abs().sum() > 0 for p in fused)


def test_bound_reads_substituted_tensors():
    """Unrolled weights are passed as tensors; the module's own are then not read."""
    net = tiny_supernet(("sep_conv_3x3", "skip_connect"), True, 0)
    x = torch.randn(3, 1, 6, 6)
    y = net(x).argmax(1)
    zero_alpha = {"alpha_normal": torch.zeros_like(net.alpha_normal)}
    moved = margin_lower_bound(net, x, y, 0.05, "ibp", tensors=zero_alpha)
    with torch.no_grad():
        net.alpha_normal.zero_()
    assert torch.allclose(moved, margin_lower_bound(net, x, y, 0.05, "ibp"))


def test_certified_radius_is_verified_and_sound():
    net = tiny_supernet(PRIMITIVES, True, 1)
    x = torch.randn(6, 1, 6, 6)
    y = net(x).argmax(1)
    radius = certified_radius(net, x, y, "crown", max_eps=0.5, steps=10)
    assert (radius > 0).all()
    at_radius = margin_lower_bound(net, x, y, radius.view(-1, 1, 1, 1), "crown")
    assert (at_radius > 0).all()
    wrong = (y + 1) % 4
    assert (certified_radius(net, x, wrong, "ibp", steps=4) == 0).all()
    assert (certified_radius(net, x, y, "ibp", max_eps=0.5, steps=10) <= radius + 1e-6).all()


# ------------------------------------------------------------------------------------ attacks
def trained_digits_mlp() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images[:600], dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target[:600])
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval(), x[:200], y[:200]


def test_pgd_beats_fgsm_beats_noise_and_stays_in_the_ball():
    net, x, y = trained_digits_mlp()
    space, eps = PixelSpace.unit(), 0.1
    gen = torch.Generator().manual_seed(0)
    noisy = (x + eps * torch.sign(torch.randn(x.shape, generator=gen))).clamp(0, 1)
    clean, noise = accuracy(net, x, y), accuracy(net, noisy, y)
    fg = robust_accuracy(net, x, y, lambda m, a, b: fgsm(m, a, b, eps, space))
    x_pgd = pgd(net, x, y, eps, space, steps=20, generator=gen)
    pg = accuracy(net, x_pgd, y)
    assert clean > 0.9
    assert pg < fg < noise <= clean, (clean, noise, fg, pg)
    assert (x_pgd - x).abs().max() <= eps + 1e-6
    assert x_pgd.min() >= 0 and x_pgd.max() <= 1
    assert pg <= accuracy(net, pgd(net, x, y, eps, space, steps=5, generator=gen), y) + 0.02


def test_pgd_reaches_the_known_optimum_of_a_linear_model():
    """For two classes of a linear model, the worst l_inf point lowers the margin by exactly
    eps * |w_y - w_j|_1 (no pixel clipping: a wide valid range)."""
    torch.manual_seed(0)
    net = nn.Linear(10, 2)
    x = torch.randn(32, 10)
    y = net(x).argmax(1)
    space = PixelSpace(scale=torch.tensor(1.0), lo=torch.tensor(-1e3), hi=torch.tensor(1e3))
    eps = 0.05
    x_adv = pgd(net, x, y, eps, space, steps=30)
    w = net.weight.detach()
    optimum = true_margin(net, x, y) - eps * (w[0] - w[1]).abs().sum()
    assert torch.allclose(true_margin(net, x_adv, y), optimum, atol=1e-4)


def test_pixel_space_from_normalisation_keeps_attacks_in_valid_pixels():
    space = PixelSpace.from_normalisation([0.3], [0.2])
    x = (torch.rand(8, 1, 4, 4) - 0.3) / 0.2
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x_adv = pgd(net, x, net(x).argmax(1), 0.1, space, steps=3)
    pixels, clean_pixels = x_adv * 0.2 + 0.3, x * 0.2 + 0.3
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6
    assert (pixels - clean_pixels).abs().max() <= 0.1 + 1e-5
