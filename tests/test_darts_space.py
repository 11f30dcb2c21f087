"""Tests of the DARTS CNN cell search space (skillearn.search_spaces.darts). CPU, a few seconds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.func import functional_call

from skillearn.search_spaces.darts import (
    DARTS_V2,
    PRIMITIVES,
    DiscreteNetwork,
    Genotype,
    SpaceConfig,
    SuperNet,
    architecture_entropy,
    derive_genotype,
    draw_alpha_evolution,
    draw_cell,
)
from skillearn.search_spaces.darts import ops as darts_ops
from skillearn.search_spaces.darts.ops import (
    OPS,
    FactorizedReduce,
    Zero,
    dilated_depthwise_as_dense,
)
from skillearn.search_spaces.darts.supernet import MixedOp

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def small_digits_config(**kw) -> SpaceConfig:
    base = dict(in_channels=1, channels=4, cells=3, nodes=4, num_classes=10)
    base.update(kw)
    return SpaceConfig(**base)


# --------------------------------------------------------------------------- space config


def test_edge_count_and_reduction_cells() -> None:
    assert SpaceConfig().num_edges == 14
    assert SpaceConfig(nodes=1).num_edges == 2
    assert SpaceConfig(nodes=2).num_edges == 5
    assert SpaceConfig(cells=8).reduction_cells() == (2, 5)
    assert SpaceConfig(cells=3).reduction_cells() == (1, 2)
    assert SpaceConfig(cells=2).reduction_cells() == (1,)
    assert SpaceConfig(cells=1).reduction_cells() == ()


def test_validate_names_unknown_op() -> None:
    with pytest.raises(ValueError, match="conv_9x9") as err:
        SpaceConfig(ops=("skip_connect", "conv_9x9")).validate()
    assert "sep_conv_3x3" in str(err.value)  # lists the valid ones
    with pytest.raises(ValueError, match="other than 'none'"):
        SpaceConfig(ops=("none",)).validate()
    with pytest.raises(ValueError, match="nodes"):
        SpaceConfig(nodes=0).validate()
    with pytest.raises(ValueError, match="cells"):
        SpaceConfig(cells=0).validate()
    with pytest.raises(ValueError, match="channels"):
        SpaceConfig(channels=0).validate()
    with pytest.raises(ValueError):
        SuperNet(SpaceConfig(ops=("bogus_op",)))
    assert SpaceConfig().validate() == SpaceConfig()


def test_config_accepts_list_ops() -> None:
    cfg = SpaceConfig(ops=["skip_connect", "sep_conv_3x3"])
    assert cfg.ops == ("skip_connect", "sep_conv_3x3")
    hash(cfg)


# --------------------------------------------------------------------------- ops


@pytest.mark.parametrize("name", PRIMITIVES)
@pytest.mark.parametrize("stride", [1, 2])
def test_every_op_keeps_channels_and_strides(name: str, stride: int) -> None:
    op = OPS[name](6, stride, False)
    y = op(torch.randn(2, 6, 8, 8))
    assert y.shape == (2, 6, 8 // stride, 8 // stride)


def test_factorized_reduce_odd_sizes() -> None:
    fr = FactorizedReduce(4, 5, affine=False)
    assert fr(torch.randn(2, 4, 7, 7)).shape == (2, 5, 4, 4)
    assert fr(torch.randn(2, 4, 8, 8)).shape == (2, 5, 4, 4)


def test_strided_pointwise_is_the_stride_two_conv() -> None:
    x, weight = torch.randn(2, 6, 7, 7), torch.randn(3, 6, 1, 1)
    expected = torch.nn.functional.conv2d(x, weight, stride=2)
    assert torch.allclose(darts_ops.strided_pointwise(x, weight), expected, atol=1e-6)


NHWC_STEP = """
import torch
from skillearn.search_spaces.darts import SpaceConfig, SuperNet
torch.manual_seed(0)
for fused in (True, False):  # nodes=1: the cell after the reduction reduces 4 channels
    space = SpaceConfig(in_channels=1, channels=4, cells=3, nodes=1, num_classes=10)
    net = SuperNet(space, fused=fused).use_channels_last().train()
    for _ in range(5):
        net(torch.randn(8, 1, 8, 8)).square().mean().backward()
print("ok")
"""


def test_nhwc_supernet_backward_survives_avx2_onednn() -> None:
    """CI's CPUs lack AVX-512; there oneDNN's NHWC stride-2 1x1 conv backward with < 8
    channels corrupted the heap (CI died with SIGSEGV). Emulated here with oneDNN's ISA cap."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", NHWC_STEP], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


# --------------------------------------------------------------------------- supernet


def test_alpha_shapes_and_parameter_split() -> None:
    net = SuperNet(small_digits_config())
    alphas = net.arch_parameters()
    assert set(alphas) == {"alpha_normal", "alpha_reduce"}
    for a in alphas.values():
        assert a.shape == (14, 8)
        assert a.requires_grad
        assert 0 < a.abs().max().item() < 1e-2  # 1e-3 * randn
    weights = net.weight_parameters()
    assert not set(weights) & set(alphas)
    assert set(weights) | set(alphas) == {n for n, _ in net.named_parameters()}
    assert SuperNet(SpaceConfig(nodes=2, ops=("skip_connect", "none"))).alpha_normal.shape == (
        5,
        2,
    )


def test_forward_shapes_digits_and_cifar() -> None:
    net = SuperNet(small_digits_config())
    assert net(torch.randn(3, 1, 8, 8)).shape == (3, 10)
    net = SuperNet(SpaceConfig(in_channels=3, channels=4, cells=3, num_classes=7))
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    # odd spatial sizes survive the reductions too (7 -> 4 -> 2)
    assert SuperNet(small_digits_config())(torch.randn(2, 1, 7, 7)).shape == (2, 10)


def test_backward_reaches_alphas_and_weights() -> None:
    net = SuperNet(small_digits_config())
    loss = torch.nn.functional.cross_entropy(net(torch.randn(4, 1, 8, 8)), torch.arange(4))
    loss.backward()
    assert net.alpha_normal.grad is not None and net.alpha_normal.grad.abs().sum() > 0
    assert net.alpha_reduce.grad is not None and net.alpha_reduce.grad.abs().sum() > 0
    assert net.stem[0].weight.grad.abs().sum() > 0


def test_mixed_op_is_weighted_sum_and_never_runs_none() -> None:
    mixed = MixedOp(4, 1, PRIMITIVES).eval()
    x = torch.randn(2, 4, 6, 6)
    w = torch.softmax(torch.randn(len(PRIMITIVES)), dim=0)
    expected = sum(w[k] * op(x) for k, op in enumerate(mixed._ops))  # includes none's zeros
    torch.testing.assert_close(mixed(x, w), expected)


def test_none_op_forward_is_never_called() -> None:
    net = SuperNet(small_digits_config(), fused=False)
    calls = []
    zeros = [m for m in net.modules() if isinstance(m, Zero)]
    assert len(zeros) == 3 * 14  # one per edge per cell: the module exists...
    for m in zeros:
        m.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        net.alpha_normal.zero_()
        net.alpha_normal[:, PRIMITIVES.index("none")] = 30.0  # all weight on 'none'
        out = net(torch.randn(2, 1, 8, 8))
    assert calls == []  # ...but is never run
    assert torch.isfinite(out).all()


def test_functional_call_with_perturbed_alphas() -> None:
    net = SuperNet(small_digits_config()).eval()
    x = torch.randn(4, 1, 8, 8)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    weights = net.weight_parameters()
    alphas = {
        n: (a.detach() + torch.randn_like(a)).requires_grad_()
        for n, a in net.arch_parameters().items()
    }

    base = net(x)
    same = functional_call(net, {**weights, **net.arch_parameters()}, (x,))
    perturbed = functional_call(net, {**weights, **alphas}, (x,))
    torch.testing.assert_close(same, base)
    assert not torch.allclose(perturbed, base, atol=1e-5)

    # the gradient flows to the substituted alphas, not to the module's own ones
    perturbed.sum().backward()
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in alphas.values())
    assert net.alpha_normal.grad is None and net.alpha_reduce.grad is None

    for n, p in net.named_parameters():
        torch.testing.assert_close(p.detach(), before[n], rtol=0, atol=0)


# --------------------------------------------------------------------------- genotype


def _hand_built_alpha() -> torch.Tensor:
    """Edges: node0 -> rows 0,1; node1 -> 2..4; node2 -> 5..8; node3 -> 9..13 (row = input j)."""
    k = {name: i for i, name in enumerate(PRIMITIVES)}
    a = torch.zeros(14, 8)
    a[0, k["none"]] = 9.0  # input 0 of node 0: 'none' dominates; best real op is dil_conv_5x5
    a[0, k["dil_conv_5x5"]] = 1.0
    a[1, k["sep_conv_3x3"]] = 2.0
    a[2, k["dil_conv_3x3"]] = 3.0  # node 1: inputs 0 and 2 win; input 1 is 'none'-dominated
    a[3, k["none"]] = 20.0
    a[4, k["sep_conv_5x5"]] = 5.0
    a[5, k["none"]] = 50.0  # node 2: 'none' has by far the largest weight anywhere
    a[6, k["max_pool_3x3"]] = 6.0
    a[8, k["skip_connect"]] = 4.0
    a[9, k["sep_conv_3x3"]] = 3.0  # node 3: inputs 0 and 4
    a[13, k["avg_pool_3x3"]] = 2.0
    return a


def test_derive_genotype_hand_built() -> None:
    g = derive_genotype(_hand_built_alpha(), torch.zeros(14, 8), PRIMITIVES, 4)
    assert g.normal == (
        ("sep_conv_3x3", 1),
        ("dil_conv_5x5", 0),
        ("sep_conv_5x5", 2),
        ("dil_conv_3x3", 0),
        ("max_pool_3x3", 1),
        ("skip_connect", 3),
        ("sep_conv_3x3", 0),
        ("avg_pool_3x3", 4),
    )
    assert all(op != "none" for op, _ in g.normal + g.reduce)
    # uniform alphas: ties go to the lowest input index and the first non-'none' op
    assert g.reduce == (("max_pool_3x3", 0), ("max_pool_3x3", 1)) * 4
    assert g.normal_concat == g.reduce_concat == (2, 3, 4, 5)


def test_derive_genotype_without_none_and_from_supernet() -> None:
    ops = ("skip_connect", "sep_conv_3x3")
    a = torch.zeros(5, 2)
    a[:, 1] = 1.0  # sep_conv everywhere...
    a[4, 0] = 5.0  # ...except node 1's edge from node 0 (input 2), the strongest
    g = derive_genotype(a, a, ops, 2)
    assert g.normal == (
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 1),
        ("skip_connect", 2),
        ("sep_conv_3x3", 0),
    )
    net = SuperNet(small_digits_config())
    with torch.no_grad():
        net.alpha_normal.copy_(_hand_built_alpha())
    assert (
        net.genotype().normal
        == derive_genotype(_hand_built_alpha(), net.alpha_reduce, PRIMITIVES, 4).normal
    )
    with pytest.raises(ValueError, match="shape"):
        derive_genotype(torch.zeros(13, 8), torch.zeros(14, 8), PRIMITIVES, 4)


def test_genotype_json_and_dict_round_trip() -> None:
    derived = derive_genotype(_hand_built_alpha(), torch.randn(14, 8), PRIMITIVES, 4)
    for g in (DARTS_V2, derived):
        assert Genotype.from_json(g.to_json()) == g
        assert Genotype.from_dict(g.to_dict()) == g
    assert DARTS_V2.normal[7] == ("dil_conv_3x3", 2)
    assert Genotype.from_json(DARTS_V2.to_json()) != derived


def test_architecture_entropy() -> None:
    uniform = torch.zeros(14, 8, requires_grad=True)
    h = architecture_entropy(uniform)
    assert h.dim() == 0
    assert h.item() == pytest.approx(math.log(8), rel=1e-6)
    peaked = torch.zeros(14, 8)
    peaked[:, 3] = 50.0
    assert architecture_entropy(peaked).item() < 1e-6
    h.backward()  # differentiable (zero gradient at the maximum, but defined)
    assert uniform.grad is not None


# --------------------------------------------------------------------------- discrete network


def test_discrete_network_from_derived_genotype() -> None:
    cfg = small_digits_config(channels=8)
    supernet = SuperNet(cfg)
    g = derive_genotype(_hand_built_alpha(), torch.randn(14, 8), PRIMITIVES, 4)
    net = DiscreteNetwork(g, 8, 3, 10, 1, drop_path_prob=0.3)
    out = net(torch.randn(4, 1, 8, 8))
    assert out.shape == (4, 10)
    torch.nn.functional.cross_entropy(out, torch.arange(4)).backward()
    assert all(p.grad is not None for p in net.parameters())
    n_discrete = sum(p.numel() for p in net.parameters())
    n_super = sum(p.numel() for p in supernet.weight_parameters().values())
    assert n_discrete < n_super

    cifar = DiscreteNetwork(DARTS_V2, channels=4, cells=3, num_classes=10, in_channels=3)
    assert cifar(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_drop_path_only_in_training() -> None:
    net = DiscreteNetwork(DARTS_V2, 4, 3, 10, 1, drop_path_prob=0.9).eval()
    x = torch.randn(8, 1, 8, 8)
    torch.testing.assert_close(net(x), net(x))  # deterministic in eval
    net.train()
    a, b = net(x), net(x)
    assert not torch.allclose(a, b)  # random sample-wise path dropping in training
    net.drop_path_prob = 0.0
    net.eval()
    torch.testing.assert_close(net(x), net(x))


# --------------------------------------------------------------------------- diagrams


def test_draw_cell_writes_png(tmp_path) -> None:
    for which in ("normal", "reduce"):
        p = draw_cell(DARTS_V2, which, tmp_path / f"sub/{which}.png")
        data = p.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5000
    with pytest.raises(ValueError):
        draw_cell(DARTS_V2, "middle", tmp_path / "x.png")


def test_draw_alpha_evolution_writes_png(tmp_path) -> None:
    history = [np.random.randn(14, 8) * t for t in range(5)]
    history.append(history[-1].tolist())  # lists accepted too
    p = draw_alpha_evolution(history, PRIMITIVES, str(tmp_path / "evo.png"))
    data = p.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5000
    with pytest.raises(ValueError):
        draw_alpha_evolution([np.zeros((14, 7))], PRIMITIVES, tmp_path / "bad.png")


@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [8, 7, 2])
@pytest.mark.parametrize("nhwc", [False, True])
def test_polyphase_dilated_conv_equals_the_dilated_conv(kernel, stride, size, nhwc) -> None:
    x = torch.randn(3, 6, size, size, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 1, kernel, kernel, dtype=torch.float64, requires_grad=True)
    inp = x.contiguous(memory_format=torch.channels_last) if nhwc else x
    expected = torch.nn.functional.conv2d(inp, w, stride=stride, padding=kernel - 1, dilation=2,
                                          groups=6)
    got = dilated_depthwise_as_dense(inp, w, stride)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected)
    cotangent = torch.randn_like(expected)
    torch.testing.assert_close(torch.autograd.grad(got, (x, w), cotangent),
                               torch.autograd.grad(expected, (x, w), cotangent))


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / (b.norm() + 1e-12))


@pytest.mark.parametrize(
    "ops, nodes, size, nhwc",
    [
        (PRIMITIVES, 4, 8, False),
        (PRIMITIVES, 4, 8, True),
        (PRIMITIVES, 2, 7, False),  # odd sizes: the stride-2 skip pads its shifted half
        (PRIMITIVES, 2, 7, True),
        (("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3"), 1, 8, False),
        (("avg_pool_3x3", "dil_conv_5x5"), 3, 8, True),
        (("skip_connect",), 2, 8, False),
    ],
)
@pytest.mark.parametrize("polyphase", [True, False])  # False: the GPU's native dilated convs
def test_fused_supernet_matches_darts_edge_by_edge(ops, nodes, size, nhwc, polyphase,
                                                   monkeypatch) -> None:
    """The fused cells compute DARTS' function: same logits, weight and alpha gradients and BN
    running statistics as the edge-by-edge net holding the same weights (NCHW reference)."""
    if not polyphase:
        monkeypatch.setattr(darts_ops, "POLYPHASE_DEVICES", set())
    config = small_digits_config(ops=ops, nodes=nodes)
    reference = SuperNet(config, fused=False).train()
    fused = SuperNet(config).train()
    fused.load_state_dict(reference.state_dict())  # DARTS names, converted on load
    if nhwc:
        fused.use_channels_last()
    with torch.no_grad():  # alphas far from uniform so every op's weight matters
        for net in (reference, fused):
            net.alpha_normal.copy_(torch.linspace(-2, 2, net.alpha_normal.numel()).view_as(
                net.alpha_normal))
            net.alpha_reduce.copy_(torch.linspace(1, -1, net.alpha_reduce.numel()).view_as(
                net.alpha_reduce))
    x, y = torch.randn(6, 1, size, size), torch.arange(6) % 10
    grads = {}
    for key, net in (("reference", reference), ("fused", fused)):
        logits = net(x)
        names, params = zip(*net.named_parameters(), strict=True)
        loss = torch.nn.functional.cross_entropy(logits, y)
        grads[key] = dict(zip(names, torch.autograd.grad(loss, params), strict=True))
        grads[key]["logits"] = logits.detach()
    expected = grads["reference"]
    got = fused.to_edgewise(grads["fused"])
    assert set(got) == set(expected)
    for name, value in expected.items():
        assert _relative(got[name], value) < 1e-5, name
    states = fused.edgewise_state_dict()
    for name, value in reference.state_dict().items():  # BN running statistics too
        torch.testing.assert_close(states[name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_fused_state_dict_round_trips_through_darts_layout() -> None:
    config = small_digits_config()
    fused = SuperNet(config)
    again = SuperNet(config)
    again.load_state_dict(fused.edgewise_state_dict())
    for name, value in fused.state_dict().items():
        assert torch.equal(again.state_dict()[name], value), name
    reference = SuperNet(config, fused=False)
    reference.load_state_dict(fused.edgewise_state_dict())  # the original layout loads it
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(reference.eval()(x), again.eval()(x), rtol=1e-5, atol=1e-6)
    partial = fused.edgewise_state_dict()
    partial.pop(next(k for k in partial if "._ops." in k))
    with pytest.raises(RuntimeError, match="lacks 1 keys"):
        again.load_state_dict(partial)


def test_fused_supernet_has_far_fewer_tensors_than_darts_cells() -> None:
    config = small_digits_config()
    fused, reference = SuperNet(config), SuperNet(config, fused=False)
    assert sum(p.numel() for p in fused.parameters()) == sum(
        p.numel() for p in reference.parameters())
    assert len(list(fused.parameters())) * 3 < len(list(reference.parameters()))


def test_channels_last_supernet_matches_the_default_layout() -> None:
    torch.manual_seed(0)
    config = SpaceConfig(nodes=2, cells=2, channels=4, in_channels=3, num_classes=5)
    plain = SuperNet(config)
    nhwc = SuperNet(config)
    nhwc.load_state_dict(plain.state_dict())
    nhwc.use_channels_last()
    x = torch.randn(4, 3, 16, 16)
    expected, got = plain(x), nhwc(x)
    assert float((expected - got).detach().norm() / expected.detach().norm()) < 1e-5
    target = torch.arange(4) % 5
    torch.nn.functional.cross_entropy(got, target).backward()
    torch.nn.functional.cross_entropy(expected, target).backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), nhwc.named_parameters(), strict=True):
        if a.grad is not None:
            assert float((a.grad - b.grad).norm() / (a.grad.norm() + 1e-12)) < 1e-4, name
