"""Which inputs are small: the one rule that `auto` settings read from the image size.

The bundled digits are 8 px, CIFAR 32 px. Small inputs (up to 16 px) get a small CNN rather
than a ResNet (classifier, LFM's encoder) and fused supernet cells (launch-bound there); from
CIFAR's size up, crop+flip augmentation and DARTS' retraining recipe apply, as in the papers.
Inputs in between are neither: neither a small model nor CIFAR's recipe.
"""

from __future__ import annotations

from collections.abc import Sequence

SMALL_INPUT_MAX_PX = 16
CIFAR_SIZED_PX = 32


def side_px(input_shape: Sequence[int]) -> int:
    """The image side in pixels of a (C, H, W) or (N, C, H, W) shape (its width)."""
    return int(input_shape[-1])


def is_small_input(input_shape: Sequence[int]) -> bool:
    """Up to 16 px: small models and fused cells."""
    return side_px(input_shape) <= SMALL_INPUT_MAX_PX


def is_cifar_sized(input_shape: Sequence[int]) -> bool:
    """From 32 px: CIFAR's augmentation and DARTS' retraining recipe."""
    return side_px(input_shape) >= CIFAR_SIZED_PX
