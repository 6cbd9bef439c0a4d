"""Splits, cache, resizing, normalization, distance-map wrapper, mni152-tissue and the CLI."""

import json
import os

import numpy as np
import pytest
import torch

from medsegloss.data import DatasetError, WithDistanceMaps, available, get_dataset
from medsegloss.data.splits import PARTS, load_split, make_split, save_split
from medsegloss.data.transforms import normalize_percentile, resize_case, resize_label, window


# ---------------------------------------------------------------------------- splits
def test_make_split_sizes_determinism_and_disjointness():
    ids = [f"case{i:02d}" for i in range(30)]
    split = make_split(ids, seed=3, val_fraction=0.1, test_fraction=0.2)
    assert [len(split[p]) for p in PARTS] == [21, 3, 6]
    assert sorted(sum((split[p] for p in PARTS), [])) == ids
    assert split == make_split(list(reversed(ids)), seed=3)  # order of the listing is irrelevant
    assert split != make_split(ids, seed=4)
    tiny = make_split(["a", "b", "c"], seed=0, val_fraction=0.1, test_fraction=0.1)
    assert [len(tiny[p]) for p in PARTS] == [1, 1, 1]  # at least one of each when asked for
    assert make_split(["a"], seed=0)["train"] == ["a"]  # always a training case
    with pytest.raises(ValueError, match="val_fraction \\+ test_fraction must be < 1"):
        make_split(ids, val_fraction=0.5, test_fraction=0.5)


def test_split_units_and_strata():
    ids = [f"p{p:02d}_{frame}" for p in range(25) for frame in ("ED", "ES")]
    groups = {f"p{p:02d}": "ABCDE"[p % 5] for p in range(25)}
    split = make_split(ids, seed=0, test_fraction=0.2, val_fraction=0.2, unit_of=lambda c: c[:3], group_of=groups.get)
    for part in PARTS:
        patients = {case[:3] for case in split[part]}
        assert len(split[part]) == 2 * len(patients)  # both frames of a patient stay together
    for part in ("val", "test"):  # 5 of 25 patients: exactly one of each group's 5
        assert sorted(groups[case[:3]] for case in split[part][::2]) == list("ABCDE")


def test_split_file_roundtrip_and_errors(tmp_path):
    split = make_split([f"c{i}" for i in range(10)], seed=1)
    save_split(split, tmp_path / "runs" / "split.json", dataset="x")
    content = json.loads((tmp_path / "runs" / "split.json").read_text())
    assert content["dataset"] == "x" and load_split(tmp_path / "runs" / "split.json") == split
    assert not [p for p in os.listdir(tmp_path / "runs") if p.endswith(".tmp")]  # atomic: no leftovers
    with pytest.raises(DatasetError, match=r"names 1 case\(s\) the dataset does not have: \['c9'\]"):
        load_split(tmp_path / "runs" / "split.json", [f"c{i}" for i in range(9)])
    (tmp_path / "dup.json").write_text(json.dumps({"train": ["a"], "val": ["a"], "test": []}))
    with pytest.raises(DatasetError, match="'a' is in both 'train' and 'val'"):
        load_split(tmp_path / "dup.json")
    with pytest.raises(DatasetError, match="does not exist"):
        load_split(tmp_path / "none.json")


def test_split_file_fixes_the_cases_across_seeds(tmp_path):
    options = dict(size=32, num_cases=8, slices_per_case=2)
    first = get_dataset("phantom-lesion", split="test", seed=1, **options)
    first.save_split(tmp_path / "split.json")
    again = get_dataset("phantom-lesion", split="test", seed=1, split_file=tmp_path / "split.json", **options)
    assert again.cases == first.cases and again.split == first.split


# ---------------------------------------------------------------------------- transforms
def test_resize_label_nearest_and_spacing():
    label = np.arange(12, dtype=np.uint8).reshape(1, 3, 4)
    # pad 3x4 -> 4x4 (one zero row below... top gets (4-3)//2 = 0 rows), then 4 -> 8: each pixel 2x2
    expected = np.repeat(np.repeat(np.vstack([label[0], np.zeros((1, 4), np.uint8)]), 2, 0), 2, 1)
    assert np.array_equal(resize_label(label, 8)[0], expected)
    case = resize_case("c", np.ones((1, 3, 4), np.float32), label, (5.0, 0.5, 0.25), 8)
    assert case.spacing == (5.0, 0.25, 0.125) and case.image.shape == (1, 8, 8)
    shrunk = resize_label(np.kron(np.eye(2, dtype=np.uint8), np.ones((4, 4), np.uint8))[None], 4)
    assert np.array_equal(shrunk[0], np.kron(np.eye(2, dtype=np.uint8), np.ones((2, 2), np.uint8)))


def test_normalization_formulas():
    rng = np.random.default_rng(0)
    volume = rng.normal(50, 10, (4, 16, 16)).astype(np.float32)
    volume[0, 0, 0] = 1e6  # an outlier the percentile clip removes
    out = normalize_percentile(volume, 1, 99)
    low, high = np.percentile(volume, [1, 99])
    clipped = np.clip(volume.astype(np.float64), low, high)
    assert np.allclose(out, (clipped - clipped.mean()) / clipped.std(), atol=1e-4)
    assert np.allclose(window(np.array([-2000.0, -1000.0, -300.0, 400.0, 900.0]), -1000, 400), [-1, -1, 0, 1, 1])


def test_distance_map_wrapper_matches_distance_module_and_caches():
    from medsegloss.distance import signed_distance_map

    data = get_dataset("phantom-cardiac", split="all", size=32, num_cases=2, slices_per_case=3)
    wrapped = WithDistanceMaps(data)
    item = wrapped[1]
    assert item["dist"].shape == (4, 32, 32) and item["dist"].dtype == torch.float32
    assert torch.equal(item["dist"], signed_distance_map(data[1]["label"][None], 4)[0])
    assert wrapped[1]["dist"] is item["dist"]  # computed once
    assert wrapped.num_classes == 4 and wrapped.cases == data.cases
    physical = WithDistanceMaps(data, num_classes=1, spacing="item")[1]
    reference = signed_distance_map(data[1]["label"][None], 1, data[1]["spacing"])[0]
    assert physical["dist"].shape == (1, 32, 32) and torch.equal(physical["dist"], reference)
    batch = next(iter(torch.utils.data.DataLoader(wrapped.precompute(), batch_size=3)))
    assert batch["dist"].shape == (3, 4, 32, 32) and batch["image"].shape == (3, 1, 32, 32)


# ---------------------------------------------------------------------------- cache
def test_disk_cache_roundtrip_and_invalidation(tmp_path):
    from medsegloss.data import cache
    from medsegloss.data.base import Case

    source = tmp_path / "source.bin"
    source.write_bytes(b"1")
    calls = []

    def compute():
        calls.append(1)
        return Case("c", np.full((2, 4, 4), len(calls), np.float32), np.ones((2, 4, 4), np.uint8), (2.0, 1.0, 1.0))

    key = ("test", cache.file_key(source), 4)
    first = cache.cached_case(key, compute, tmp_path / "cache")
    cache.clear()
    second = cache.cached_case(key, compute, tmp_path / "cache")  # from disk, not recomputed
    assert len(calls) == 1 and np.array_equal(first.image, second.image) and second.spacing == (2.0, 1.0, 1.0)
    assert isinstance(second.image, np.memmap)
    source.write_bytes(b"22")  # the file changed: a new key
    third = cache.cached_case(("test", cache.file_key(source), 4), compute, tmp_path / "cache")
    assert len(calls) == 2 and third.image[0, 0, 0] == 2


# ---------------------------------------------------------------------------- mni152-tissue
def _mni_or_skip():
    from medsegloss.data.mni152 import template_files

    try:
        return template_files()
    except DatasetError as error:
        pytest.skip(str(error))


def test_mni152_tissue_labels_slabs_and_gap():
    paths = _mni_or_skip()
    from medsegloss.data.nifti import read_nifti

    data = get_dataset("mni152-tissue", split="all", size=64, dims=3, num_slabs=6, gap=4)
    assert data.class_names == ["background", "GM", "WM"] and len(data.cases) == 6
    volumes = [data.case(case) for case in data.cases]
    for volume in volumes:
        fractions = (volume.label > 0).mean(axis=(1, 2))
        assert fractions.min() > 0  # no slice without brain inside a slab
        assert {0, 1, 2} <= set(np.unique(volume.label).tolist()) or fractions.max() < 0.05
    # the label rule against the files themselves, at the template's own resolution
    gm, _, _ = read_nifti(paths["gm"])
    wm, _, _ = read_nifti(paths["wm"])
    full = get_dataset("mni152-tissue", split="all", size=None, dims=3, num_slabs=6, gap=4)
    stacked = np.concatenate([full.case(case).label for case in full.cases])
    reference = np.argmax(np.stack([np.clip(255 - gm - wm, 0, None), gm, wm]), axis=0)[::-1, ::-1]
    fractions = (reference > 0).mean(axis=(1, 2))
    first = int(np.flatnonzero(fractions >= 0.01)[0])
    assert np.array_equal(full.case("slab00").label, reference[first:first + len(full.case("slab00").label)])
    assert len(stacked) == (fractions >= 0.01).sum() - 5 * 4  # every brain slice but the 5 gaps
    assert full.volume_spacing("slab00") == (1.0, 1.0, 1.0)
    parts = {s: set(get_dataset("mni152-tissue", split=s, size=32, num_slabs=6, gap=4).cases) for s in PARTS}
    assert not (parts["train"] & parts["test"]) and sum(map(len, parts.values())) == 6


def test_mni152_missing_files_say_how_to_install(tmp_path):
    with pytest.raises(DatasetError, match="pip install --no-deps nilearn"):
        get_dataset("mni152-tissue", root=tmp_path)


# ---------------------------------------------------------------------------- CLI
def test_cli_lists_every_dataset(capsys):
    from medsegloss.data._cli import main

    assert main(["--options"]) == 0
    out = capsys.readouterr().out
    for name in available():
        assert name in out
    assert "needs root" in out and "slices_per_case=16" in out and "background, RV, MYO, LV" in out
