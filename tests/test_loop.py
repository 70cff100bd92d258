"""gradkit.loop: the device loader and the pieces fit and fit_stacked share."""

import pytest
import torch
import torch.nn.functional as F

from gradkit.loop import DeviceLoader


def _images(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(n)


def _raw_loader(x, y, **kw):
    # std = 1/255 and mean 0 make the normalised output equal the pixel values, so crops compare exactly.
    return DeviceLoader(x, y, mean=(0.0,) * 3, std=(1 / 255,) * 3, device="cpu", **kw)


# ---------------------------------------------------------------- DeviceLoader


def test_loader_shapes_and_length():
    x, y = _images(70)
    loader = _raw_loader(x, y, batch_size=32, train=True)
    batches = list(loader)
    assert len(loader) == 3
    assert [b[0].shape for b in batches] == [(32, 3, 32, 32), (32, 3, 32, 32), (6, 3, 32, 32)]
    assert all(b[0].dtype == torch.float32 and b[1].dtype == torch.long for b in batches)
    # train=True shuffles: every image exactly once per epoch, not in order
    seen = torch.cat([b[1] for b in batches])
    assert sorted(seen.tolist()) == list(range(70)) and seen.tolist() != list(range(70))


def test_loader_crop_is_a_shifted_original_with_zero_border_and_flip_is_exact():
    x, y = _images(64)
    padded = F.pad(x, (4, 4, 4, 4))
    offsets, flips = set(), set()
    for xb, yb in _raw_loader(x, y, batch_size=16, train=True):
        for out, i in zip(xb, yb.tolist()):
            found = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)
                     if torch.equal(out, _crop(padded[i], dy, dx, f))]
            assert found, f"image {i} is no crop/flip of its padded original"
            dy, dx, f = found[0]
            offsets.add((dy, dx))
            flips.add(f)
            # the border that came from padding is zero, the rest is the original shifted by (dy-4, dx-4)
            img = out.flip(-1) if f else out
            if dy < 4:
                assert img[:, : 4 - dy].abs().sum() == 0
            assert torch.equal(img[:, max(0, 4 - dy):32 - max(0, dy - 4), max(0, 4 - dx):32 - max(0, dx - 4)],
                               x[i][:, max(0, dy - 4):32 - max(0, 4 - dy), max(0, dx - 4):32 - max(0, 4 - dx)].float())
    assert flips == {False, True}
    assert len(offsets) > 20  # 64 images over 81 offsets: per-image randomness, not one offset per batch


def _crop(padded_img, dy, dx, flip):
    crop = padded_img[:, dy:dy + 32, dx:dx + 32].float()
    return crop.flip(-1) if flip else crop


def test_loader_channels_last_changes_layout_not_values():
    x, y = _images(16)
    a = next(iter(_raw_loader(x, y, batch_size=8, train=True, seed=3, channels_last=True)))[0]
    b = next(iter(_raw_loader(x, y, batch_size=8, train=True, seed=3)))[0]
    assert a.is_contiguous(memory_format=torch.channels_last) and b.is_contiguous()
    assert torch.equal(a, b)


def test_loader_eval_has_no_augmentation_and_keeps_order():
    x, y = _images(50)
    batches = list(_raw_loader(x, y, batch_size=20, train=False))
    assert torch.equal(torch.cat([b[0] for b in batches]), x.float())
    assert torch.equal(torch.cat([b[1] for b in batches]), y)


def test_loader_shuffle_without_augment_returns_the_images_unchanged():
    x, y = _images(40)
    for xb, yb in _raw_loader(x, y, batch_size=16, train=True, augment=False):
        assert torch.equal(xb, x[yb].float())


def test_loader_normalisation_matches_torchvision():
    from torchvision.transforms import Normalize

    x, y = _images(8)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    xb, _ = next(iter(DeviceLoader(x, y, 8, train=False, mean=mean, std=std, device="cpu")))
    expected = Normalize(mean, std)(x.float() / 255)
    assert torch.allclose(xb, expected, atol=1e-5)


def test_loader_same_seed_same_batches_other_seed_other_batches():
    x, y = _images(48)

    def epochs(seed):
        loader = _raw_loader(x, y, batch_size=16, train=True, seed=seed)
        return [torch.cat([b[0] for b in loader]) for _ in range(2)]

    a, b, c = epochs(1), epochs(1), epochs(2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], a[1])  # a new order and new crops every epoch
    assert not torch.equal(a[0], c[0])


def test_loader_rejects_bad_input():
    x, y = _images(4)
    with pytest.raises(ValueError, match="x_uint8"):
        DeviceLoader(x.float(), y, 2, device="cpu")
    with pytest.raises(ValueError, match="y must"):
        DeviceLoader(x, y[:3], 2, device="cpu")
    with pytest.raises(ValueError, match="batch_size"):
        DeviceLoader(x, y, 0, device="cpu")
