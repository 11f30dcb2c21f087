"""The reweighting protocol of the papers: a small clean validation split, the meta set out of the
training part, seeded training augmentation, MW-Net's variants and inputs, full-budget mwnet_nas."""

from __future__ import annotations

from pathlib import Path

import pytest

from skillearn.platform.cli import main
from skillearn.trainables.registry import get_skill, resolve_config
from skillearn.trainables.runner import data_spec
from skillearn.trainables.skill import ConfigError


@pytest.mark.parametrize(("skill", "expected"), [("darts", 0.5), ("lfm", 0.5), ("mwnet", 0.1),
                                                 ("mwnet_nas", 0.1), ("lfm_dr", 0.1), ("ce", 0.1)])
def test_val_fraction_defaults_by_kind_and_is_honoured(skill: str, expected: float) -> None:
    config = resolve_config(get_skill(skill))
    assert config["val_fraction"] == expected
    assert data_spec(config).val_fraction == expected
    assert data_spec(resolve_config(get_skill(skill), {"val_fraction": 0.3})).val_fraction == 0.3


@pytest.mark.parametrize("value", [0.0, 1.0, -0.2])
def test_val_fraction_out_of_range_is_refused(value: float) -> None:
    with pytest.raises(ConfigError, match="val_fraction"):
        resolve_config(get_skill("mwnet"), {"val_fraction": value})


def test_bad_val_fraction_fails_up_front(tmp_path: Path, monkeypatch, capsys) -> None:
    import ray

    monkeypatch.chdir(tmp_path)
    code = main(["sweep", "mwnet", "--set", "val_fraction=1.0", "--storage", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("skillearn: error: ") and "val_fraction" in err[0]
    assert not ray.is_initialized()
