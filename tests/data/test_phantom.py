"""Phantom datasets: statistics, determinism, item format, slices that stack back into volumes."""

import numpy as np
import pytest
import torch

from medsegloss.data import get_dataset
from medsegloss.data.phantom import cardiac_group, cardiac_volume, lesion_volume


@pytest.fixture(scope="module")
def lesion_cases():
    return [lesion_volume(0, i, size=128, slices=16) for i in range(12)]


def test_lesion_statistics(lesion_cases):
    fractions = np.concatenate([label.reshape(label.shape[0], -1).mean(1) for _, label, _ in lesion_cases])
    with_lesion = fractions[fractions > 0]
    # small foreground: about 0.5-3 % of a slice where a lesion is present, and some empty slices
    assert 0.003 < np.mean(with_lesion) < 0.03, np.mean(with_lesion)
    assert 0.1 < np.mean(fractions == 0) < 0.8
    assert np.mean(fractions) < 0.02
    assert all(label.any() for _, label, _ in lesion_cases)  # every case has a lesion, not every slice
    for image, label, spacing in lesion_cases:
        assert image.dtype == np.float32 and label.dtype == np.uint8
        assert image.min() >= -1 and image.max() <= 1  # lung window mapped to [-1, 1]
        assert set(np.unique(label).tolist()) <= {0, 1}
        assert spacing[0] > spacing[1] == spacing[2]  # anisotropic: thick slices


def test_lesions_are_faint_and_inside_the_lungs(lesion_cases):
    for image, label, _ in lesion_cases:
        if not label.any():
            continue
        lesion = image[label == 1]
        # lesions are brighter than aerated lung (-860 HU -> about -0.66) but far below soft tissue
        assert -0.85 < np.median(lesion) < -0.2
        lesion_slices = label.any(axis=(1, 2))
        around = image[lesion_slices][label[lesion_slices] == 0]
        lung = around[(around > -0.9) & (around < -0.45)]  # aerated lung: not outside air (-1), not tissue
        contrast = np.median(lesion) - np.median(lung)
        assert 0.05 < contrast < 0.5  # low contrast: under 350 HU of the 1400 HU window


def test_cardiac_classes_and_anatomy():
    for index in range(6):
        image, label, spacing = cardiac_volume(0, index, size=96, slices=10)
        present = [(label == k).any(axis=(1, 2)) for k in range(4)]
        assert present[2].all(), "myocardium is in every slice (apex: a solid cap)"
        assert present[3][:5].all() and present[1][:3].all()  # LV and RV cavities at the base
        assert not present[1][-1], "the RV ends before the apex"
        # LV cavity (bright blood) is enclosed by myocardium: bright on average, myocardium dark
        assert image[label == 3].mean() > image[label == 2].mean() + 0.5
        assert spacing == (10.0, 320.0 / 96, 320.0 / 96)
        assert abs(float(image.mean())) < 1e-3 and abs(float(image.std()) - 1) < 1e-2  # z-scored


def test_phantoms_are_deterministic_from_the_seed():
    a = lesion_volume(3, 5, size=64, slices=6)
    b = lesion_volume(3, 5, size=64, slices=6)
    c = lesion_volume(4, 5, size=64, slices=6)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    x, y = cardiac_volume(1, 2, size=64, slices=6), cardiac_volume(1, 2, size=64, slices=6)
    assert np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1])
    assert cardiac_group(1, 2) == cardiac_group(1, 2)


@pytest.mark.parametrize("name", ["phantom-lesion", "phantom-cardiac"])
def test_items_stack_back_into_volumes(name):
    options = dict(size=64, num_cases=5, slices_per_case=4, seed=7, val_fraction=0.2, test_fraction=0.2)
    slices = get_dataset(name, split="train", **options)
    volumes = get_dataset(name, split="train", dims=3, **options)
    assert slices.cases == volumes.cases and len(slices) == 4 * len(volumes)
    item = slices[0]
    assert item["image"].dtype == torch.float32 and item["image"].shape == (1, 64, 64)
    assert item["label"].dtype == torch.int64 and item["label"].shape == (64, 64)
    assert isinstance(item["case"], str) and item["slice"] == 0 and len(item["spacing"]) == 2
    for volume in volumes:
        stacked = [slices[i] for i in range(len(slices)) if slices[i]["case"] == volume["case"]]
        assert [s["slice"] for s in stacked] == list(range(4))
        assert torch.equal(torch.stack([s["image"][0] for s in stacked])[None], volume["image"])
        assert torch.equal(torch.stack([s["label"] for s in stacked]), volume["label"])
        assert volume["spacing"] == slices.volume_spacing(volume["case"])
        assert volume["spacing"][1:] == stacked[0]["spacing"] and volume["slice"] == -1
    assert int(max(int(slices[i]["label"].max()) for i in range(len(slices)))) < slices.num_classes


def test_splits_are_by_case_and_collate():
    options = dict(size=48, num_cases=10, slices_per_case=3, seed=0)
    parts = {split: get_dataset("phantom-cardiac", split=split, **options) for split in ("train", "val", "test")}
    cases = [set(parts[s].cases) for s in parts]
    assert not (cases[0] & cases[1]) and not (cases[0] & cases[2]) and not (cases[1] & cases[2])
    assert set().union(*cases) == {f"cardiac{i:03d}" for i in range(10)}
    assert parts["train"].num_classes == 4 and parts["train"].class_names == ["background", "RV", "MYO", "LV"]
    batch = next(iter(torch.utils.data.DataLoader(parts["train"], batch_size=4)))
    assert batch["image"].shape == (4, 1, 48, 48) and batch["label"].shape == (4, 48, 48)


def test_bad_options():
    with pytest.raises(TypeError, match="no option"):
        get_dataset("phantom-lesion", colour=True)
    with pytest.raises(ValueError, match="takes no root"):
        get_dataset("phantom-lesion", root="/tmp")
    with pytest.raises(ValueError, match="unknown dataset 'phantom-lesions'.*phantom-lesion"):
        get_dataset("phantom-lesions")
    with pytest.raises(ValueError, match="split must be one of"):
        get_dataset("phantom-lesion", split="training", size=32, num_cases=3, slices_per_case=2)


def test_size_changes_the_resolution_not_the_anatomy():
    small = cardiac_volume(0, 3, size=64, slices=6)[1]
    large = cardiac_volume(0, 3, size=256, slices=6)[1]
    # pixel centres of the 64-grid fall at rows/cols 2, 6, 10, ... of the 256-grid (nearest)
    assert (large[:, 2::4, 2::4] == small).mean() > 0.98
