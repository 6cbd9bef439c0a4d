"""Surface metrics: brute-force all-pairs references, hand-checked shifts, spacing, medpy and
MONAI, the empty-mask table, the exact crop and window search, and bad input."""

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.spatial.distance import cdist

from medsegloss import metrics
from medsegloss.distance import bounding_box, surface, surface_distances

SURFACE = ["hd", "hd95", "hd95_pooled", "assd", "masd", "nsd"]


def blobs(shape, seed, sigma=1.5):
    """A reference blob and a perturbed prediction, away from the image edge (MONAI crops with a
    margin, so its edges differ from medpy's at the image border)."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    radius = sum(g ** 2 for g in grid)
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    ref = radius + 2 * noise < 0.45
    pred = radius + 2 * ndimage.gaussian_filter(rng.standard_normal(shape), sigma) + 0.1 * rng.random() < 0.45
    return pred, ref


def surface_by_loops(mask):
    """The surface by its definition, voxel by voxel: a foreground voxel with a face-neighbour
    that is background or outside the image (independent of the package's ``surface``)."""
    mask = np.asarray(mask, bool)
    out = np.zeros_like(mask)
    for index in zip(*np.nonzero(mask)):
        for axis in range(mask.ndim):
            for step in (-1, 1):
                neighbour = list(index)
                neighbour[axis] += step
                if not 0 <= neighbour[axis] < mask.shape[axis] or not mask[tuple(neighbour)]:
                    out[index] = True
    return out


def brute_force(pred, ref, spacing):
    """Directed distances from all pairs of surface voxel centres (scipy cdist), float64."""
    a = np.argwhere(surface_by_loops(pred)) * np.asarray(spacing)
    b = np.argwhere(surface_by_loops(ref)) * np.asarray(spacing)
    pairs = cdist(a, b)
    return pairs.min(axis=1), pairs.min(axis=0)


def reference_values(pred, ref, spacing, tolerance):
    forward, backward = brute_force(pred, ref, spacing)
    both = np.concatenate([forward, backward])
    return {
        "hd": both.max(),
        "hd95": max(np.percentile(forward, 95), np.percentile(backward, 95)),
        "hd95_pooled": np.percentile(both, 95),
        "assd": both.mean(),
        "masd": (forward.mean() + backward.mean()) / 2,
        "nsd": np.mean(both <= tolerance),
    }


@pytest.mark.parametrize("shape, spacing", [
    ((9, 11), (1.0, 1.0)), ((10, 8), (0.7, 1.9)), ((6, 7, 5), (1.0, 1.0, 1.0)), ((7, 6, 8), (2.5, 0.8, 1.1)),
])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_equal_brute_force_on_random_masks(shape, spacing, seed):
    rng = np.random.default_rng(seed)
    pred, ref = rng.random(shape) < 0.3, rng.random(shape) < 0.3
    tolerance = 1.5
    expected = reference_values(pred, ref, spacing, tolerance)
    for name in SURFACE:
        options = {"tolerance": tolerance} if name == "nsd" else {}
        got = metrics.get(name)(pred, ref, spacing, **options)
        assert got == pytest.approx(expected[name], rel=1e-12, abs=1e-12), name


def test_far_apart_masks_use_the_exact_fallback():
    # farther apart than the search window (3 voxels): the KD-tree finishes the job
    pred, ref = np.zeros((40, 44), bool), np.zeros((40, 44), bool)
    pred[2:6, 3:9] = True
    ref[25:33, 30:41] = True
    ref[3:5, 12:14] = True  # and a near part, so both paths run in one call
    spacing = (1.2, 0.6)
    forward, backward = surface_distances(pred, ref, spacing)
    expected_forward, expected_backward = brute_force(pred, ref, spacing)
    np.testing.assert_allclose(forward, expected_forward, rtol=0, atol=1e-12)
    np.testing.assert_allclose(backward, expected_backward, rtol=0, atol=1e-12)


@pytest.mark.parametrize("tolerance", [0.0, 0.5, 1.0, 2.3, 7.0])
def test_max_distance_keeps_every_distance_within_it(tolerance):
    pred, ref = blobs((20, 24), 4)
    spacing = (1.0, 0.7)
    forward, _ = surface_distances(pred, ref, spacing, max_distance=tolerance)
    exact, _ = brute_force(pred, ref, spacing)
    within = exact <= tolerance
    np.testing.assert_array_equal(forward <= tolerance, within)
    np.testing.assert_allclose(forward[within], exact[within], atol=1e-12)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_squares_offset_by_k_voxels(k):
    a = np.zeros((16, 20), bool)
    a[3:9, 3:9] = True
    b = np.roll(a, k, axis=1)
    assert metrics.hd(a, b) == k
    assert metrics.hd(a, b, spacing=(1.0, 0.5)) == k * 0.5
    assert metrics.hd(a, b, spacing=(3.0, 2.0)) == 2 * k
    cube = np.zeros((12, 12, 12), bool)
    cube[2:7, 2:7, 2:7] = True
    assert metrics.hd(cube, np.roll(cube, k, axis=0), spacing=(2.5, 1, 1)) == 2.5 * k


def test_identical_masks_are_perfect():
    pred, _ = blobs((12, 14, 10), 5)
    for name in SURFACE:
        assert metrics.get(name)(pred, pred, (1.0, 2.0, 0.5)) == metrics.info(name).perfect


def test_hd95_directed_and_pooled_differ_where_the_definitions_do():
    # a small spurious blob far away: its few distances are the top 5 % of one direction only
    ref = np.zeros((30, 30), bool)
    ref[5:20, 5:20] = True
    pred = ref.copy()
    pred[26:28, 26:28] = True
    directed, pooled = metrics.hd95(pred, ref), metrics.hd95(pred, ref, pooled=True)
    forward, backward = brute_force(pred, ref, (1, 1))
    assert directed == max(np.percentile(forward, 95), np.percentile(backward, 95))
    assert pooled == np.percentile(np.concatenate([forward, backward]), 95)
    assert pooled == metrics.hd95_pooled(pred, ref)
    assert directed != pooled


@pytest.mark.parametrize("shape, spacing", [((40, 48), (0.8, 1.3)), ((16, 20, 18), (2.5, 1.0, 0.9))])
@pytest.mark.parametrize("seed", [0, 1])
def test_agrees_with_medpy(shape, spacing, seed):
    binary = pytest.importorskip("medpy.metric.binary")
    pred, ref = blobs(shape, seed)
    assert metrics.hd(pred, ref, spacing) == pytest.approx(binary.hd(pred, ref, spacing), rel=1e-6, abs=1e-6)
    assert metrics.hd95(pred, ref, spacing, pooled=True) == pytest.approx(
        binary.hd95(pred, ref, spacing), rel=1e-6, abs=1e-6)
    assert metrics.assd(pred, ref, spacing) == pytest.approx(binary.assd(pred, ref, spacing), rel=1e-6, abs=1e-6)
    # medpy's asd is one direction: the mean of d(P->R)
    forward, backward = surface_distances(pred, ref, spacing)
    assert forward.mean() == pytest.approx(binary.asd(pred, ref, spacing), rel=1e-6, abs=1e-6)
    assert metrics.masd(pred, ref, spacing) == pytest.approx(
        (binary.asd(pred, ref, spacing) + binary.asd(ref, pred, spacing)) / 2, rel=1e-6, abs=1e-6)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # MONAI's own deprecation notice
def test_agrees_with_monai():
    monai_metrics = pytest.importorskip("monai.metrics")
    pred, ref = blobs((16, 20, 18), 2)
    spacing = (2.5, 1.0, 0.9)

    def one_hot(mask):
        return torch.from_numpy(np.stack([~mask, mask])[None])

    hd95 = monai_metrics.compute_hausdorff_distance(one_hot(pred), one_hot(ref), percentile=95, spacing=spacing)
    assert metrics.hd95(pred, ref, spacing) == pytest.approx(float(hd95), rel=1e-5)
    assd = monai_metrics.compute_average_surface_distance(one_hot(pred), one_hot(ref), symmetric=True,
                                                          spacing=spacing)
    assert metrics.assd(pred, ref, spacing) == pytest.approx(float(assd), rel=1e-5)
    nsd = monai_metrics.compute_surface_dice(one_hot(pred), one_hot(ref), [2.0], spacing=spacing)
    assert metrics.nsd(pred, ref, spacing, tolerance=2.0) == pytest.approx(float(nsd), rel=1e-6)


def test_bounding_box_crop_is_exact():
    mask, other = blobs((14, 16, 12), 6)
    mask[0, 3:6, 4:7] = True  # touches the image edge
    box = bounding_box(mask, other)
    np.testing.assert_array_equal(surface(mask), surface_by_loops(mask))
    np.testing.assert_array_equal(surface(mask[box]), surface(mask)[box])
    assert surface(mask).sum() == surface(mask[box]).sum()
    assert bounding_box(np.zeros((3, 4)), np.zeros((3, 4))) is None


EMPTY_TABLE = {  # (both empty, only pred empty, only ref empty); "diagonal" of the image below
    "nan": {name: ("nan", "nan", "nan") for name in SURFACE},
    "worst": {
        **{name: (0.0, "diagonal", "diagonal") for name in ["hd", "hd95", "hd95_pooled", "assd", "masd"]},
        "nsd": (1.0, 0.0, 0.0),
    },
}


@pytest.mark.parametrize("empty", ["nan", "worst"])
def test_empty_mask_table(empty):
    some, none = np.zeros((6, 8), bool), np.zeros((6, 8), bool)
    some[2:4, 2:5] = True
    spacing = (2.0, 0.5)
    diagonal = math.hypot(6 * 2.0, 8 * 0.5)
    for name, expected in EMPTY_TABLE[empty].items():
        for (pred, ref), value in zip([(none, none), (none, some), (some, none)], expected):
            got = metrics.get(name)(pred, ref, spacing, empty=empty)
            if value == "nan":
                assert math.isnan(got), (name, got)
            else:
                assert got == pytest.approx(diagonal if value == "diagonal" else value), (name, empty)


def test_torch_and_numpy_inputs_agree():
    pred, ref = blobs((14, 12, 10), 7)
    assert metrics.assd(torch.from_numpy(pred), torch.from_numpy(ref).int(), (1, 2, 3)) == \
        metrics.assd(pred, ref, (1, 2, 3))


def test_bad_input_is_a_clear_error():
    a = np.zeros((5, 5), bool)
    a[1:3, 1:3] = True
    with pytest.raises(ValueError, match=r"one value per spatial axis \(2\), got 3"):
        metrics.hd95(a, a, spacing=(1, 1, 1))
    with pytest.raises(ValueError, match="positive"):
        metrics.assd(a, a, spacing=(1, -1))
    with pytest.raises(ValueError, match=r"same shape"):
        metrics.hd(a, np.zeros((5, 6), bool))
    with pytest.raises(ValueError, match="binary mask"):
        metrics.nsd(a.astype(int) * 3, a)
    with pytest.raises(ValueError, match="tolerance"):
        metrics.nsd(a, a, tolerance=-1)
    with pytest.raises(ValueError, match="empty must be one of"):
        metrics.hd(a, a, empty="ignore")
    with pytest.raises(ValueError, match="non-empty"):
        surface_distances(a, np.zeros_like(a))


@pytest.mark.parametrize("shape", [(9, 11), (6, 7, 5)])
@pytest.mark.parametrize("seed", [0, 1])
def test_surface_equals_its_definition_voxel_by_voxel(shape, seed):
    mask = np.random.default_rng(seed).random(shape) < 0.5
    np.testing.assert_array_equal(surface(mask), surface_by_loops(mask))
