"""Seeded on-device augmentation: deterministic per seed, and each transform does what it says."""

from __future__ import annotations

import torch

from skillearn.data.augment import crop_flip, cutout, random_flip


def _images(n: int = 16, size: int = 8) -> torch.Tensor:
    return torch.arange(n * 3 * size * size, dtype=torch.float32).reshape(n, 3, size, size) + 1.0


def test_crop_flip_is_deterministic_per_seed_and_varies_across_seeds() -> None:
    x = _images()
    a = crop_flip(x, torch.Generator().manual_seed(5), pad=2)
    b = crop_flip(x, torch.Generator().manual_seed(5), pad=2)
    c = crop_flip(x, torch.Generator().manual_seed(6), pad=2)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.shape == x.shape


def test_random_flip_mirrors_exactly_the_flipped_images() -> None:
    x = _images()
    out = random_flip(x, torch.Generator().manual_seed(0), p=0.5)
    flipped = [torch.equal(out[i], x[i].flip(-1)) for i in range(len(x))]
    kept = [torch.equal(out[i], x[i]) for i in range(len(x))]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 0 < sum(flipped) < len(x)


def test_cutout_zeroes_one_square_of_at_most_length_squared_pixels() -> None:
    x = _images(n=32, size=12)
    out = cutout(x, torch.Generator().manual_seed(1), length=4)
    zeroed = (out == 0).all(dim=1)  # (N, H, W): the hole is shared by all channels
    per_image = zeroed.flatten(1).sum(1)
    assert (per_image <= 16).all() and (per_image > 0).all()
    assert (per_image == 16).any()  # a hole fully inside the image is exactly length x length
    assert torch.equal(out[~zeroed[:, None].expand_as(x)], x[~zeroed[:, None].expand_as(x)])


def test_random_shift_is_a_window_of_the_zero_padded_image() -> None:
    import torch.nn.functional as F

    from skillearn.data.augment import random_shift

    x, pad = _images(n=32, size=6), 2
    out = random_shift(x, torch.Generator().manual_seed(3), pad)
    padded = F.pad(x, (pad, pad, pad, pad))
    offsets = set()
    for i in range(len(x)):  # exactly one window of the padded image matches each output
        hits = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                if torch.equal(out[i], padded[i, :, dy : dy + 6, dx : dx + 6])]
        assert len(hits) == 1
        offsets.add(hits[0])
    assert len(offsets) > 5  # shifts vary across images
