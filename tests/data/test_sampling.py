"""The training-sample stream: determinism, foreground oversampling, padding, augmentation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medsegloss.data.sampling import (PatchSampler, StepBatchSampler, is_foreground_sample, sample_indices,
                                      spatial_transform)


class Items(torch.utils.data.Dataset):
    """A list of items as a dataset (what every medsegloss dataset serves)."""

    def __init__(self, items):
        self.items = items
        self.num_classes = 4

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return dict(self.items[index])


def item(image: np.ndarray, label: np.ndarray, case: str = "c", spacing=(1.0, 2.0)) -> dict:
    return {"image": torch.from_numpy(np.ascontiguousarray(image, np.float32)),
            "label": torch.from_numpy(np.ascontiguousarray(label)), "case": case, "slice": 0, "spacing": spacing}


def random_items(count=4, shape=(24, 24), num_classes=4, seed=0) -> Items:
    rng = np.random.default_rng(seed)
    items = []
    for k in range(count):
        label = rng.integers(0, num_classes, shape).astype(np.int64)
        items.append(item(rng.normal(size=(1, *shape)), label, case=f"case{k}"))
    return Items(items)


def no_intensity(**options) -> dict:
    return {"intensity_scale": (1, 1), "intensity_shift": (0, 0), **options}


def dihedral(array: np.ndarray) -> list[np.ndarray]:
    """The 8 flips and rotations of a square 2-D array."""
    return [np.rot90(candidate, k) for candidate in (array, np.flip(array, 0)) for k in range(4)]


# ---------------------------------------------------------------- determinism
def test_a_sample_is_a_function_of_seed_and_index_only():
    dataset = random_items()
    first, second = PatchSampler(dataset, 16, seed=3), PatchSampler(dataset, 16, seed=3)
    backwards = [second[i] for i in reversed(range(12))][::-1]  # another object, another order
    for i in range(12):
        a, b = first[i], backwards[i]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
        assert (a["source_index"], a["start"]) == (b["source_index"], b["start"])
    other = PatchSampler(dataset, 16, seed=4)
    differ = sum(not torch.equal(first[i]["image"], other[i]["image"]) for i in range(12))
    assert differ == 12


def test_workers_and_a_resumed_stream_give_the_same_batches():
    sampler = PatchSampler(random_items(), 16, seed=1)
    plain = list(torch.utils.data.DataLoader(sampler, batch_sampler=StepBatchSampler(4, 6)))
    workers = list(torch.utils.data.DataLoader(sampler, batch_sampler=StepBatchSampler(4, 6), num_workers=2))
    resumed = list(torch.utils.data.DataLoader(sampler, batch_sampler=StepBatchSampler(4, 6, start_step=4)))
    assert len(plain) == 6 and len(resumed) == 2
    for a, b in zip(plain, workers):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    for a, b in zip(plain[4:], resumed):
        assert torch.equal(a["image"], b["image"])


def test_sample_indices_tile_the_stream_over_steps_and_ranks():
    assert list(sample_indices(0, 3)) + list(sample_indices(1, 3)) == list(range(6))
    ranks = [i for step in range(3) for rank in range(2) for i in sample_indices(step, 3, rank, 2)]
    assert ranks == list(range(18))  # 2 processes read one process's stream with batch 6
    with pytest.raises(ValueError, match="rank must be < world_size"):
        sample_indices(0, 3, rank=2, world_size=2)


# ---------------------------------------------------------------- foreground oversampling
@pytest.mark.parametrize("fraction, batch", [(1 / 3, 8), (1 / 3, 2), (0.5, 5), (0.0, 4), (1.0, 3)])
def test_foreground_samples_are_exactly_the_fraction(fraction, batch):
    steps = 30
    counts = [sum(is_foreground_sample(i, fraction) for i in sample_indices(step, batch)) for step in range(steps)]
    assert sum(counts) == math.floor(steps * batch * fraction + 1e-9)
    assert set(counts) <= {math.floor(batch * fraction + 1e-9), math.ceil(batch * fraction - 1e-9)}


def test_foreground_fraction_of_patches_matches_the_derived_probability():
    # one foreground pixel at (40, 20) in one of three 64x64 items; patches 16x16
    label = np.zeros((64, 64), np.int64)
    label[40, 20] = 1
    empty = np.zeros_like(label)
    dataset = Items([item(np.zeros((1, 64, 64)), label), item(np.zeros((1, 64, 64)), empty),
                     item(np.zeros((1, 64, 64)), empty)])
    sampler = PatchSampler(dataset, 16, seed=0)
    n, fraction = 600, 1 / 3
    samples = [sampler[i] for i in range(n)]
    forced = [s for s in samples if s["foreground_sample"]]
    assert len(forced) == 200 and all(s["label"].sum() == 1 for s in forced)
    # a random patch holds the pixel when its item is the first (1/3) and its start covers the
    # pixel on both axes: 16 of the 49 starts per axis
    p = (1 / 3) * (16 / 49) ** 2
    random_hits = sum(int(s["label"].sum()) for s in samples if not s["foreground_sample"])
    trials = n - len(forced)
    assert abs(random_hits - trials * p) <= 4 * math.sqrt(trials * p * (1 - p))
    assert abs(sum(int(s["label"].sum()) for s in samples) / n - (fraction + (1 - fraction) * p)) \
        <= 4 * math.sqrt(trials * p * (1 - p)) / n


def test_forced_samples_centre_on_a_present_class_chosen_uniformly():
    rng = np.random.default_rng(0)
    a, b, c = (np.zeros((32, 32), np.int64) for _ in range(3))
    a[4:20, 4:20] = 1          # item a: class 1 only
    b[10:30, 2:12] = 2         # item b: class 2 only
    c[0:16, 0:32] = 1          # item c: a large class 1 and a single voxel of class 3
    c[28, 5] = 3
    dataset = Items([item(rng.normal(size=(1, 32, 32)), label) for label in (a, b, c)])
    sampler = PatchSampler(dataset, 8, foreground_fraction=1.0, seed=2)
    from_c, with_class_3 = 0, 0
    for i in range(300):
        sample = sampler[i]
        present = [{1}, {2}, {1, 3}][sample["source_index"]]
        assert set(sample["label"].unique().tolist()) & present  # a present class is in the patch
        if sample["source_index"] == 2:
            from_c += 1
            with_class_3 += int((sample["label"] == 3).any())
    # class 3 is one of c's two present classes: chosen with probability 1/2, not 1 / 513
    assert with_class_3 >= from_c / 2 - 4 * math.sqrt(from_c / 4)


# ---------------------------------------------------------------- crops and padding
def test_a_patch_is_the_source_window_and_small_items_are_padded_in_the_centre():
    rng = np.random.default_rng(1)
    image, label = rng.normal(size=(1, 10, 12)), rng.integers(1, 3, (10, 12)).astype(np.int64)
    sampler = PatchSampler(Items([item(image, label)]), (16, 16), augment=False, label_pad_value=255,
                           ignore_index=255, image_pad_value=-1.0)
    sample = sampler[0]
    assert sample["start"] == (-3, -2)
    expected_image, expected_label = np.full((1, 16, 16), -1.0, np.float32), np.full((16, 16), 255)
    expected_image[:, 3:13, 2:14], expected_label[3:13, 2:14] = image, label
    assert np.array_equal(sample["image"].numpy(), expected_image)
    assert np.array_equal(sample["label"].numpy(), expected_label)
    big = random_items(count=1, shape=(30, 20))
    patch = PatchSampler(big, (8, 8), augment=False, seed=5)[3]
    (y, x) = patch["start"]
    assert 0 <= y <= 22 and 0 <= x <= 12
    assert torch.equal(patch["label"], big[0]["label"][y:y + 8, x:x + 8])


def test_3d_patches_centre_on_foreground_and_pad_a_thin_volume():
    label = np.zeros((3, 20, 20), np.int64)  # 3 slices, thinner than the patch's 4
    label[1, 17, 2] = 2
    sampler = PatchSampler(Items([item(np.ones((1, 3, 20, 20)), label, spacing=(5.0, 1.0, 1.0))]), (4, 8, 8),
                           foreground_fraction=1.0, seed=0, **no_intensity())
    for i in range(10):
        sample = sampler[i]
        assert sample["label"].shape == (4, 8, 8) and int((sample["label"] == 2).sum()) == 1
        assert sample["start"][0] == 0 and sample["start"][1:] == (12, 0)  # centred on (17, 2), kept inside
        assert float(sample["image"].sum()) == 3 * 8 * 8  # one padded slice of zeros


def test_whole_items_3d_multichannel_with_alignment_kept():
    rng = np.random.default_rng(2)
    label = rng.integers(0, 3, (6, 12, 12)).astype(np.int64)
    image = np.stack([label, -2.0 * label + 1])  # the label encoded as intensity, two channels
    sampler = PatchSampler(Items([item(image, label, spacing=(3.0, 1.0, 2.0))]), None, seed=0)
    turns = set()
    for i in range(24):
        sample = sampler[i]
        flips, quarter_turns, scale, shift = sampler.augmentation(i, 2)
        turns.add(quarter_turns)
        out_label = sample["label"].numpy().astype(np.float32)
        assert sample["image"].shape == (2, 6, 12, 12)
        np.testing.assert_allclose(sample["image"][0].numpy(), scale[0] * out_label + shift[0], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(sample["image"][1].numpy(), scale[1] * (1 - 2 * out_label) + shift[1],
                                   rtol=1e-6, atol=1e-6)
        assert np.array_equal(np.bincount(sample["label"].ravel(), minlength=3), np.bincount(label.ravel(), minlength=3))
        assert sample["spacing"] == ((3.0, 2.0, 1.0) if quarter_turns % 2 else (3.0, 1.0, 2.0))
        assert 0.9 <= scale.min() and scale.max() <= 1.1 and -0.1 <= shift.min() and shift.max() <= 0.1
    assert turns == {0, 1, 2, 3}


def test_augmentation_permutes_the_patch_of_the_same_choice():
    dataset = random_items(count=3, shape=(20, 20))
    plain = PatchSampler(dataset, 12, augment=False, seed=7)
    augmented = PatchSampler(dataset, 12, seed=7, **no_intensity())
    changed = 0
    for i in range(20):
        before, after = plain[i], augmented[i]
        assert (before["source_index"], before["start"]) == (after["source_index"], after["start"])
        candidates = dihedral(before["label"].numpy())
        assert any(np.array_equal(after["label"].numpy(), candidate) for candidate in candidates)
        index = next(k for k, candidate in enumerate(candidates) if np.array_equal(after["label"].numpy(), candidate))
        assert np.array_equal(after["image"][0].numpy(), dihedral(before["image"][0].numpy())[index])
        changed += not torch.equal(before["label"], after["label"])
    assert changed >= 10  # the identity is 1 of 8 equally likely transforms


def test_a_non_square_patch_is_flipped_but_never_rotated():
    sampler = PatchSampler(random_items(count=2, shape=(20, 20)), (8, 12), seed=0)
    assert all(sampler[i]["label"].shape == (8, 12) for i in range(16))


def test_multihot_labels_are_sampled_and_augmented_channel_by_channel():
    regions = np.zeros((2, 16, 16), np.float32)
    regions[0, 2:10, 3:12], regions[1, 4:7, 5:8] = 1, 1  # nested: whole ⊃ core
    rng = np.random.default_rng(3)
    sampler = PatchSampler(Items([item(rng.normal(size=(1, 16, 16)), regions)]), 6, foreground_fraction=1.0,
                           seed=1, distance_classes=2)
    for i in range(10):
        sample = sampler[i]
        assert sample["label"].shape == (2, 6, 6) and sample["label"].dtype == torch.float32
        assert sample["label"][0].any()  # every foreground sample holds a region
        assert bool((sample["label"][1] <= sample["label"][0]).all())  # nesting survives the transforms
        assert sample["dist"].shape == (2, 6, 6)


# ---------------------------------------------------------------- distance maps
def test_dist_of_a_patch_is_the_map_of_the_returned_label_as_the_boundary_loss_computes_it():
    from medsegloss.distance import signed_distance_map
    from medsegloss.losses import get

    dataset = random_items(count=2, shape=(20, 20), num_classes=3)
    sampler = PatchSampler(dataset, 12, seed=0, distance_classes=3)
    batch = torch.utils.data.default_collate([sampler[i] for i in range(4)])
    assert torch.equal(batch["dist"], signed_distance_map(batch["label"], 3))
    logits = torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    loss = get("boundary")
    assert torch.equal(loss(logits, batch["label"], dist=batch["dist"]), loss(logits, batch["label"]))


def test_cached_whole_item_maps_are_transformed_exactly():
    from medsegloss.data import WithDistanceMaps
    from medsegloss.distance import signed_distance_map

    label = np.zeros((16, 16), np.int64)
    label[2:7, 3:13], label[9:15, 1:5] = 1, 2  # no symmetry
    cached = WithDistanceMaps(Items([item(np.zeros((1, 16, 16)), label)]), num_classes=3)
    sampler = PatchSampler(cached, None, seed=0)
    for i in range(8):
        sample = sampler[i]
        torch.testing.assert_close(sample["dist"], signed_distance_map(sample["label"][None], 3)[0])
    with pytest.raises(ValueError, match="distance_classes=C"):
        PatchSampler(cached, 8)


def test_spatial_transform_is_a_voxel_permutation():
    array = np.arange(2 * 4 * 4).reshape(2, 4, 4)
    out = spatial_transform(array, [True, False], 1, 2)
    assert np.array_equal(np.sort(out.ravel()), array.ravel())
    assert np.array_equal(out[0], np.rot90(np.flip(array[0], 0)))


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("options, message", [
    ({"patch_size": (8, 8, 8)}, "patch_size must be None, an int >= 1 or 2 ints"),
    ({"patch_size": 0}, "patch_size"),
    ({"foreground_fraction": 1.5}, "foreground_fraction must be a number in"),
    ({"seed": -1}, "seed must be an int >= 0"),
    ({"intensity_scale": (1.1, 0.9)}, "intensity_scale must have low <= high"),
    ({"distance_classes": 0}, "distance_classes"),
])
def test_bad_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        PatchSampler(random_items(count=1, shape=(8, 8)), **options)


def test_bad_items_and_indices_are_named():
    with pytest.raises(ValueError, match="does not match image shape"):
        PatchSampler(Items([item(np.zeros((1, 8, 8)), np.zeros((8, 9), np.int64))]))
    with pytest.raises(ValueError, match="no items"):
        PatchSampler(Items([]))
    with pytest.raises(ValueError, match="index must be an int >= 0"):
        PatchSampler(random_items(count=1, shape=(8, 8)))[-1]
