"""One input-size rule: every `auto` that depends on the image side reads `data.input_size`."""

from __future__ import annotations

import pytest

from skillearn.data.augment import training_augmentation
from skillearn.data.input_size import is_cifar_sized, is_small_input
from skillearn.trainables.classifiers import BasicBlock, make_classifier
from skillearn.trainables.encoders import auto_encoder_kind
from skillearn.trainables.retraining import choose_recipe
from skillearn.trainables.setup import use_fused_cells


@pytest.mark.parametrize("px", [8, 16, 17, 31, 32, 64])
def test_every_auto_choice_follows_the_rule(px: int) -> None:
    shape = (3, px, px)
    small, cifar = is_small_input(shape), is_cifar_sized(shape)
    assert small == (px <= 16) and cifar == (px >= 32)  # the digits (8) and CIFAR (32) sides
    resnet = any(isinstance(m, BasicBlock) for m in make_classifier("auto", shape, 10).modules())
    assert resnet == (not small)
    assert auto_encoder_kind("auto", shape) == ("small" if small else "resnet18")
    assert use_fused_cells("auto", shape) == small
    assert (training_augmentation("auto", shape) is not None) == cifar
    assert choose_recipe("auto", shape)[0].name == ("darts" if cifar else "fast")


def test_an_explicit_setting_is_not_overridden_by_the_size() -> None:
    assert auto_encoder_kind("resnet34", (1, 8, 8)) == "resnet34"
    assert use_fused_cells("off", (1, 8, 8)) is False
    assert training_augmentation("on", (1, 8, 8)) is not None
