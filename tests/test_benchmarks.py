"""The benchmark suite runs end to end, and its naive DARTS reference is the same algorithm as
skillearn's hypergradients (so the speed-ups it reports compare like with like)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` is not installed

from benchmarks import cases, step_ratio  # noqa: E402
from benchmarks.common import run_probe_subprocess, summarize  # noqa: E402
from benchmarks.equivalence import (  # noqa: E402
    naive_vs_skillearn_first_order,
    naive_vs_skillearn_second_order,
    supernet_vs_naive_network,
)
from skillearn.search_spaces.darts import SpaceConfig  # noqa: E402

TINY = cases.SIZES["tiny"][0]


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_step_ratio_runs_end_to_end_and_writes_json(tmp_path, capsys):
    path = tmp_path / "ratios.json"
    step_ratio.main(["--sizes", "tiny", "--steps", "2", "--warmup", "1", "--threads", "1",
                     "--skills", "darts,lfm", "--methods", "first_order,finite_difference",
                     "--no-memory", "--quiet", "--json", str(path)])
    payload = json.loads(path.read_text())
    assert {"device", "device_name", "torch", "threads", "date"} <= set(payload["environment"])
    (result,) = payload["results"]
    expected = {cases.PLAIN, cases.PLAIN_EDGEWISE, *cases.NAIVE_LABELS, "darts/first_order",
                "darts/finite_difference", "lfm/finite_difference",
                *(f"darts@{tag}/{method}" for tag in ("pc_darts", "p_darts.s0", "p_darts.s2")
                  for method in ("first_order", "finite_difference"))}
    assert set(result["timings"]) == expected
    for timing in result["timings"].values():
        assert timing["steps"] == 2 and timing["median_ms"] > 0
        assert {"median_ms", "q1_ms", "q3_ms", "iqr_ms", "samples_ms"} <= set(timing)
    assert result["ratios"][cases.PLAIN]["step_ratio"] == pytest.approx(1.0)
    assert result["ratios"]["darts/finite_difference"]["baseline"] == cases.PLAIN
    assert result["ratios"][cases.NAIVE_SECOND_ORDER]["baseline"] == cases.NAIVE_PLAIN
    assert {"skillearn_plain_over_naive_plain",
            "darts_finite_difference_over_naive_second_order",
            "lfm_finite_difference_over_naive_second_order",
            "fused_plain_over_edgewise_plain", "pc_darts_over_darts_finite_difference",
            "p_darts_s2_over_darts_first_order"} <= set(result["headline"])
    assert any("lfm/first_order skipped" in note for note in result["notes"])
    assert any("timed steps" in note for note in result["notes"])
    assert "darts/finite_difference" in capsys.readouterr().out


def test_cpu_memory_probe_runs_in_a_fresh_process():
    result = run_probe_subprocess(
        "benchmarks.step_ratio",
        ["--probe-memory", cases.NAIVE_SECOND_ORDER, "--variant", "tiny", "--threads", "1"],
        threads=1,
    )
    assert result["label"] == cases.NAIVE_SECOND_ORDER
    assert result["peak_mb"] >= 0 and result["method"]


def test_summary_median_and_iqr():
    summary = summarize([0.001, 0.002, 0.003, 0.004, 0.100])
    assert summary.median_ms == pytest.approx(3.0)
    assert summary.q1_ms == pytest.approx(2.0) and summary.q3_ms == pytest.approx(4.0)
    assert summary.iqr_ms == pytest.approx(2.0)


@pytest.mark.parametrize("weight_steps", [0, 2])
def test_naive_second_order_equals_skillearn_finite_difference(weight_steps):
    """Float64, identical weights, batch and momentum buffers: DARTS' architect.py
    second-order gradient and the engine's finite-difference hypergradient agree to roundoff."""
    errors = naive_vs_skillearn_second_order(TINY, weight_steps=weight_steps)
    assert errors["weights_after_steps"] < 1e-14
    assert errors["val_loss"] < 1e-14
    assert errors["hypergradient"] < 1e-10


def test_naive_first_order_equals_skillearn_first_order():
    assert naive_vs_skillearn_first_order(TINY) < 1e-12


@pytest.mark.parametrize("fused", [True, False])
def test_supernet_matches_the_original_darts_network(fused):
    """Both cell layouts (NHWC, `none` skipped) against the naive port, every op included."""
    variant = cases.Variant("all-ops", "tiny", (1, 8, 8), 8,
                            SpaceConfig(nodes=2, cells=3, channels=4, in_channels=1))
    errors = supernet_vs_naive_network(variant, fused=fused)
    assert max(errors.values()) < 1e-5


def test_cifar_shaped_runs_report_the_projected_search_time(tmp_path, monkeypatch):
    """On 3x32x32 input the run projects DARTS' 50-epoch CIFAR-10 search from its step time."""
    space = SpaceConfig(ops=("max_pool_3x3", "skip_connect", "sep_conv_3x3"), nodes=1, cells=3,
                        channels=4, in_channels=3)
    variant = cases.Variant("tiny32", "tiny32", (3, 32, 32), 8, space)
    monkeypatch.setitem(cases.SIZES, "tiny32", (variant,))
    path = tmp_path / "ratios.json"
    step_ratio.main(["--sizes", "tiny32", "--steps", "2", "--warmup", "1", "--threads", "1",
                     "--skills", "darts", "--methods", "finite_difference", "--no-memory",
                     "--quiet", "--json", str(path)])
    (result,) = json.loads(path.read_text())["results"]
    median_ms = result["timings"]["darts/finite_difference"]["median_ms"]
    steps = 50 * -(-25_000 // 8)
    assert result["headline"]["projected_50_epoch_cifar10_search_h_darts"] == pytest.approx(
        median_ms * steps / 3.6e6)
    assert "projected_50_epoch_cifar10_search_h_naive" in result["headline"]
    assert cases.PLAIN_FUSED in result["timings"]  # 32 px: trials use DARTS' cells


# --------------------------------------------------------------------------------------------
# benchmarks.peers: skillearn against Betty (Betty optional)
def _peers_run(tmp_path, *extra: str) -> dict:
    from benchmarks import peers

    path = tmp_path / "peers.json"
    peers.main(["--cases", "mwnet_tiny,darts_tiny", "--steps", "2", "--warmup", "1",
                "--repeats", "1", "--no-memory", "--quiet", "--json", str(path), *extra])
    return json.loads(path.read_text())


def test_peers_without_betty_times_skillearn_and_says_why(tmp_path, capsys):
    payload = _peers_run(tmp_path, "--no-betty")
    assert any("Betty rows skipped" in note for note in payload["notes"])
    assert "Betty rows skipped" in capsys.readouterr().out
    for result in payload["results"]:
        assert set(result["pooled_timings"]) == {"plain", "skillearn", "skillearn_reuse"}
        assert set(result["step_ratios"]) == {"skillearn/plain", "skillearn_reuse/plain"}
        assert all(r["median"] > 0 for r in result["step_ratios"].values())
        mixed = result["hypergradients"]["mixed"]
        assert "betty" not in mixed and "betty_restore_displacement" not in result[
            "hypergradients"]
    mwnet = payload["results"][0]["hypergradients"]["mixed"]
    # MW-Net's loss is smooth in w: the finite difference matches the double backward
    assert mwnet["noise"]["cos_skillearn_exact"] > 0.99


def test_peers_missing_betty_is_a_note_not_a_crash(monkeypatch):
    from benchmarks import peers

    monkeypatch.setitem(sys.modules, "betty", None)  # `import betty` raises ImportError
    reason = peers.betty_missing_reason()
    assert reason is not None and "pip install --no-deps" in reason


def test_peers_with_betty_compares_both_engines(tmp_path):
    pytest.importorskip("betty")
    from benchmarks import peers

    payload = _peers_run(tmp_path)
    assert payload["environment"]["betty"]
    for result in payload["results"]:
        assert {"skillearn/betty", "skillearn_reuse/betty", "betty/plain"} <= set(
            result["step_ratios"])
        hyper = result["hypergradients"]
        # both engines' finite differences of the same quantity on the same state agree
        betty_quantity = hyper["mixed"]["betty"]["quantity"]
        assert hyper["mixed"][betty_quantity]["cos_skillearn_betty"] > 0.99
        # Betty 0.1.x leaves the lower weights at w - eps v (||eps v|| = darts_alpha); a fixed
        # Betty restores them exactly: nothing else may move them
        shift = hyper["betty_restore_displacement"]
        assert min(shift, abs(shift - peers.FD_RADIUS)) < 1e-4


def test_phases_account_for_the_whole_step(tmp_path):
    from benchmarks import phases

    path = tmp_path / "phases.json"
    phases.main(["--sizes", "tiny", "--methods", "first_order,finite_difference", "--steps", "2",
                 "--warmup", "1", "--threads", "1", "--json", str(path)])
    first, second = json.loads(path.read_text())["results"]
    for result in (first, second):
        ms = result["phase_ms"]
        assert result["plain_ms"] > 0 and ms["total"] > 0
        assert ms["lower gradient"] > 0 and ms["upper at w'"] > 0 and ms["optimizer steps"] > 0
    assert first["phase_ms"]["mixed product"] == 0.0  # first order takes no product
    assert second["phase_ms"]["mixed product"] > 0 and second["phase_ms"]["unroll"] > 0
