"""`encoder_weights`: LFM's encoder V starts from a saved torchvision ResNet state dict (seed 000
uses ImageNet-pretrained ones); a file that does not fit fails with one line before Ray starts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import resnet18, resnet34

from skillearn.knobs import ConfigError
from skillearn.platform.cli import main
from skillearn.platform.validate import SweepRequest, validate_sweep
from skillearn.trainables.encoders import make_encoder
from skillearn.trainables.registry import get_skill


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    torch.manual_seed(123)
    state = resnet18(weights=None).state_dict()  # as torch.save(model.state_dict()) writes it
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(state, path)
    return path, state


def test_a_saved_resnet18_state_dict_becomes_the_encoders_weights(resnet18_file) -> None:
    path, state = resnet18_file
    torch.manual_seed(0)
    fresh = make_encoder("resnet18", 3, 32).state_dict()
    torch.manual_seed(0)
    loaded = make_encoder("resnet18", 3, 32, str(path)).state_dict()
    assert not torch.equal(fresh["layer1.0.conv1.weight"], state["layer1.0.conv1.weight"])
    assert set(loaded) == {k for k in state if not k.startswith("fc.")}  # the head is dropped
    for key, tensor in loaded.items():
        torch.testing.assert_close(tensor, state[key], rtol=0, atol=0)
    assert not torch.equal(loaded["conv1.weight"], fresh["conv1.weight"])


def test_both_lfm_skills_offer_the_knob_and_resnet50() -> None:
    for name in ("lfm", "lfm_dr"):
        knobs = get_skill(name).knobs
        assert knobs["encoder_weights"].default == ""
        assert "resnet50" in knobs["encoder"].choices
    features = make_encoder("resnet50", 3, 32)(torch.randn(2, 3, 32, 32))
    assert features.shape == (2, 2048)


def _one_line_error(path: str, kind: str = "resnet18", in_channels: int = 3) -> str:
    with pytest.raises(ConfigError) as caught:
        make_encoder(kind, in_channels, 32, path)
    message = str(caught.value)
    assert "\n" not in message and path in message
    return message


def test_a_resnet34_file_for_resnet18_names_the_mismatch_and_the_fitting_encoder(
    tmp_path: Path,
) -> None:
    path = tmp_path / "resnet34.pth"
    torch.save(resnet34(weights=None).state_dict(), path)
    message = _one_line_error(str(path))
    assert "does not fit encoder=resnet18" in message and "it fits encoder=resnet34" in message


def test_unreadable_files_fail_with_one_line(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all" * 10)
    assert "cannot be read as a PyTorch state dict" in _one_line_error(str(garbage))
    pickled_module = tmp_path / "module.pth"
    torch.save(nn.Linear(2, 2), pickled_module)  # needs code to unpickle: weights_only refuses
    assert "weights_only=True" in _one_line_error(str(pickled_module))
    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], not_a_dict)
    assert "not a state dict" in _one_line_error(str(not_a_dict))
    assert "no such file" in _one_line_error(str(tmp_path / "missing.pth"))


def test_rgb_weights_do_not_fit_a_one_channel_encoder(resnet18_file) -> None:
    message = _one_line_error(str(resnet18_file[0]), in_channels=1)
    assert "conv1.weight has shape (64, 3, 7, 7), the encoder needs (64, 1, 7, 7)" in message


def test_weights_need_a_resnet_encoder(resnet18_file) -> None:
    assert "needs encoder=resnet18, resnet34 or resnet50" in _one_line_error(
        str(resnet18_file[0]), kind="small")


def test_the_sweep_refuses_a_mismatched_file_in_one_line_before_ray(tmp_path: Path,
                                                                     capsys) -> None:
    path = tmp_path / "resnet34.pth"
    torch.save(resnet34(weights=None).state_dict(), path)
    code = main(["sweep", "lfm", "--set", "encoder=resnet18", "--set",
                 f"encoder_weights={path}", "--storage", str(tmp_path / "runs"),
                 "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not fit encoder=resnet18" in err[0]
    assert not (tmp_path / "runs").exists()  # nothing started


def test_the_sweep_accepts_a_fitting_file_by_relative_path(resnet18_file, tmp_path: Path,
                                                          monkeypatch) -> None:
    path, _ = resnet18_file
    monkeypatch.chdir(path.parent)
    spec = validate_sweep(SweepRequest(
        "lfm_dr", {"encoder": "resnet18", "encoder_weights": path.name}, samples=1,
        storage=str(tmp_path / "runs"), tracking_uri=f"sqlite:///{tmp_path}/mlflow.db"))
    assert spec.config["encoder_weights"] == str(path.resolve())  # trials run elsewhere


def test_the_sweep_refuses_weights_without_an_explicit_resnet(resnet18_file,
                                                             tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs encoder=resnet18, resnet34 or resnet50 .* "
                                          "got encoder=auto"):
        validate_sweep(SweepRequest("lfm", {"encoder_weights": str(resnet18_file[0])},
                                    samples=1, storage=str(tmp_path / "runs"),
                                    tracking_uri=f"sqlite:///{tmp_path}/mlflow.db"))
