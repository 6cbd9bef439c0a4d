"""Signed distance maps of medsegloss.distance against brute force and scipy.ndimage."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from medsegloss.distance import euclidean_distance, signed_distance, signed_distance_map, unsigned_distance_map


def brute_force_distance(mask, spacing):
    """Distance from each voxel of ``mask`` to the nearest voxel outside it, by trying them all."""
    points = np.array(list(itertools.product(*[range(s) for s in mask.shape])))
    scaled = points * np.asarray(spacing)
    inside, outside = mask.ravel(), ~mask.ravel()
    out = np.zeros(mask.size)
    pairwise = np.sqrt(((scaled[inside, None, :] - scaled[None, outside, :]) ** 2).sum(-1))
    out[inside] = pairwise.min(1)
    return out.reshape(mask.shape)


def random_mask(shape, seed, fill=0.4):
    return np.random.default_rng(seed).random(shape) < fill


@pytest.mark.parametrize("shape, spacing", [((7, 9), (1.0, 1.0)), ((7, 9), (2.5, 0.7)),
                                            ((5, 6, 4), (3.0, 1.0, 0.5))])
def test_signed_distance_matches_brute_force(shape, spacing):
    for seed in range(3):
        mask = random_mask(shape, seed)
        outside, inside = brute_force_distance(~mask, spacing), brute_force_distance(mask, spacing)
        np.testing.assert_allclose(signed_distance(mask, spacing, convention="symmetric"), outside - inside,
                                   rtol=1e-5, atol=1e-5)
        # the boundary-loss paper's level set: d_out outside, 1 - d_in inside
        np.testing.assert_allclose(signed_distance(mask, spacing), np.where(mask, 1 - inside, outside),
                                   rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(euclidean_distance(mask, spacing), brute_force_distance(mask, spacing),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape, spacing", [((40, 33), (1.2, 0.8)), ((12, 20, 16), (2.0, 1.0, 0.6))])
def test_signed_distance_matches_scipy(shape, spacing):
    from scipy import ndimage

    mask = random_mask(shape, 7, fill=0.2)
    expected = (ndimage.distance_transform_edt(~mask, sampling=spacing)
                - ndimage.distance_transform_edt(mask, sampling=spacing))
    np.testing.assert_allclose(signed_distance(mask, spacing, convention="symmetric"), expected, rtol=1e-5, atol=1e-5)


def test_signed_distance_sign_convention():
    mask = np.zeros((1, 6), bool)
    mask[0, 2:4] = True
    assert signed_distance(mask, convention="symmetric").tolist() == [[2.0, 1.0, -1.0, -1.0, 1.0, 2.0]]
    assert signed_distance(mask, spacing=(1.0, 0.5), convention="symmetric").tolist() == [
        [1.0, 0.5, -0.5, -0.5, 0.5, 1.0]]
    # the paper's: inside 1 - d_in, so the border voxels weigh 0 (the 1 is in spacing units)
    assert signed_distance(mask).tolist() == [[2.0, 1.0, 0.0, 0.0, 1.0, 2.0]]
    assert signed_distance(mask, spacing=(1.0, 0.5)).tolist() == [[1.0, 0.5, 0.5, 0.5, 0.5, 1.0]]


@pytest.mark.parametrize("shape", [(6, 5), (3, 4, 5)])
def test_empty_and_full_masks_give_zeros(shape):
    for mask in (np.zeros(shape, bool), np.ones(shape, bool)):
        out = signed_distance(mask, spacing=(2.0,) * len(shape))
        assert out.shape == shape and out.dtype == np.float32 and not out.any()


def test_input_types_are_accepted():
    mask = random_mask((6, 7), 3)
    expected = signed_distance(mask)
    np.testing.assert_array_equal(signed_distance(mask.astype(np.uint8)), expected)
    np.testing.assert_array_equal(signed_distance(torch.from_numpy(mask)), expected)
    np.testing.assert_array_equal(signed_distance(mask.astype(np.float32) * 0.9), expected)  # > 0.5


@pytest.mark.parametrize("spatial, spacing", [((9, 8), (1.5, 1.0)), ((5, 6, 7), (2.0, 1.0, 1.0))])
def test_batched_map_of_labels(spatial, spacing):
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (2, *spatial), generator=generator)
    labels[1] = 0  # sample 1: only background -> its class 0 is full, classes 1, 2 empty: all zeros
    maps = signed_distance_map(labels, num_classes=3, spacing=spacing)
    assert maps.shape == (2, 3, *spatial) and maps.dtype == torch.float32
    for n, c in itertools.product(range(2), range(3)):
        expected = signed_distance((labels[n] == c).numpy(), spacing)
        np.testing.assert_array_equal(maps[n, c].numpy(), expected)
    assert not maps[1].any()
    onehot = torch.nn.functional.one_hot(labels, 3).movedim(-1, 1).float()
    torch.testing.assert_close(signed_distance_map(onehot, spacing=spacing), maps)


def test_binary_map_has_one_channel_for_the_foreground():
    generator = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 2, (3, 8, 9), generator=generator)
    maps = signed_distance_map(labels, num_classes=1)
    assert maps.shape == (3, 1, 8, 9)
    for n in range(3):
        np.testing.assert_array_equal(maps[n, 0].numpy(), signed_distance(labels[n].numpy() == 1))
    torch.testing.assert_close(signed_distance_map(labels.unsqueeze(1).float()), maps)


def test_map_errors():
    with pytest.raises(ValueError, match="num_classes"):
        signed_distance_map(torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="spacing"):
        signed_distance_map(torch.zeros(1, 2, 4, 4), spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        signed_distance(random_mask((4, 4), 0), spacing=(1.0, 0.0))


def test_unsigned_distance_map_is_distance_to_the_other_side_by_scipy():
    from scipy import ndimage

    generator = np.random.default_rng(3)
    masks = generator.random((2, 3, 7, 6)) > 0.6
    masks[0, 1] = False  # empty: no boundary, zeros
    masks[1, 2] = True  # full: no boundary, zeros
    spacing = (1.5, 0.5)
    expected = np.zeros(masks.shape, np.float32)
    for index in np.ndindex(2, 3):
        mask = masks[index]
        if mask.any() and not mask.all():  # inside: distance to background; outside: to the mask
            expected[index] = np.where(mask, ndimage.distance_transform_edt(mask, sampling=spacing),
                                       ndimage.distance_transform_edt(~mask, sampling=spacing))
    result = unsigned_distance_map(torch.from_numpy(masks), spacing)
    assert result.dtype == torch.float32 and result.shape == masks.shape
    torch.testing.assert_close(result, torch.from_numpy(expected))
    assert result[0, 1].abs().sum() == 0 and result[1, 2].abs().sum() == 0
