"""Synthetic datasets that need no download: CT-like chest slices with small lesions
(``phantom-lesion``) and MRI-like cardiac short-axis slices (``phantom-cardiac``).

Each case is a 3-D volume with anisotropic spacing, generated from ``(seed, kind, case index)``
alone (every random shape is drawn in resolution-independent units, so ``size`` changes the
resolution, not the anatomy) with vectorized NumPy (tens of milliseconds per case at 256², cached in memory), so the
same seed gives the same pixels on every machine and 2-D items are slices of those volumes.

The images are meant to be hard enough that losses differ: lesions are small, faint and blurred
inside textured lungs full of brighter vessels; cardiac structures have variable shapes
(pathology-like groups), papillary muscles inside the cavity, a bias field and Rician noise.
"""

from __future__ import annotations

import numpy as np
import torch

from medsegloss.data.base import Case
from medsegloss.data.transforms import normalize_percentile, window

LESION_CLASSES = ["background", "lesion"]
CARDIAC_CLASSES = ["background", "RV", "MYO", "LV"]  # ACDC's labels 0..3
CARDIAC_GROUPS = ("NOR", "DCM", "HCM", "MINF", "RV")  # ACDC's pathology groups
_KIND_ID = {"lesion": 1, "cardiac": 2}


# ---------------------------------------------------------------------------- building blocks
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in ``[-1, 1]``: ``y`` (rows, down = posterior) and ``x``."""
    axis = ((np.arange(size, dtype=np.float32) + 0.5) / size) * 2 - 1
    return axis[:, None], axis[None, :]


def _smooth_noise(rng: np.random.Generator, depth: int, size: int, cells: int, cells_z: int = 2) -> np.ndarray:
    """Band-limited noise ``(depth, size, size)`` of unit std: a coarse Gaussian grid of
    ``cells_z x cells x cells`` values, bicubic in-plane (plane by plane), then linear in z."""
    coarse = rng.standard_normal((cells_z, cells + 3, cells + 3)).astype(np.float32)
    margin = size * 3 // cells  # drop the outer ring of coarse cells, where bicubic rings
    planes = torch.nn.functional.interpolate(torch.from_numpy(coarse)[:, None], size=(size + margin,) * 2,
                                             mode="bicubic", align_corners=True)[:, 0]
    planes = planes[:, margin // 2:margin // 2 + size, margin // 2:margin // 2 + size].numpy()
    if cells_z == 1:
        out = np.broadcast_to(planes, (depth, size, size))
    else:
        position = np.linspace(0, cells_z - 1, depth, dtype=np.float32)
        low = np.minimum(position.astype(np.int64), cells_z - 2)
        frac = (position - low)[:, None, None]
        out = planes[low] * (1 - frac) + planes[low + 1] * frac
    return out / max(float(out.std()), 1e-6)


def _f32(value):
    """NumPy 2 keeps float64 scalars float64 in mixed arithmetic: cast parameters once, so every
    volume-sized array stays float32 (half the memory traffic)."""
    return np.asarray(value, dtype=np.float32)


def _soft(signed: np.ndarray, width: float) -> np.ndarray:
    """Smooth step: 1 where ``signed >> width``, 0 where ``<< -width`` (partial-volume edges)."""
    return 0.5 + 0.5 * np.tanh(_f32(signed) * _f32(1.0 / width))


def _mix(image: np.ndarray, value, weight: np.ndarray) -> np.ndarray:
    """Paint ``value`` over ``image`` with opacity ``weight`` in [0, 1]."""
    return image + _f32(weight) * (_f32(value) - image)


def _ellipse_radius(y, x, cy, cx, ay, ax, angle=0.0, power=2.0):
    """Normalized radius of a (super-)ellipse: < 1 inside, 1 on the outline."""
    dy, dx = y - _f32(cy), x - _f32(cx)
    cos, sin = _f32(np.cos(angle)), _f32(np.sin(angle))
    u, v = (dx * cos + dy * sin) / _f32(ax), (dy * cos - dx * sin) / _f32(ay)
    if power == 2.0:
        return np.sqrt(u * u + v * v)
    return (np.abs(u) ** _f32(power) + np.abs(v) ** _f32(power)) ** _f32(1.0 / power)


def _case_rng(seed: int, kind: str, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), _KIND_ID[kind], int(index)])


# ---------------------------------------------------------------------------- phantom-lesion
def lesion_volume(seed: int, index: int, size: int = 256, slices: int = 16):
    """One chest CT-like case: ``(image (D, S, S) float32 in [-1, 1], label uint8, spacing)``.

    Anatomy (HU): air -1000, subcutaneous fat -100, muscle and mediastinum 40, ribs and spine
    300-700, lungs -870 with smooth texture and bright vessels (denser near the hila); 1-4
    ground-glass lesions (ellipsoids with lobulated outlines, +100..+260 HU, edges blurred over a
    few pixels) kept inside the lungs. The label is the lesion where its blurred profile passes
    half height. Gaussian noise of 15-30 HU; lung window [-1000, 400] HU mapped to [-1, 1].
    """
    rng = _case_rng(seed, "lesion", index)
    y, x = _grid(size)
    depth = slices
    t = np.linspace(0, 1, depth, dtype=np.float32)[:, None, None]  # apex (0) -> base (1)
    pixel = 2.0 / size
    edge = 0.7 * pixel

    ax, ay, power = rng.uniform(0.80, 0.92), rng.uniform(0.55, 0.66), rng.uniform(2.0, 2.6)
    body_r = _ellipse_radius(y, x, 0.02, 0.0, ay, ax, power=power)
    fat = rng.uniform(0.05, 0.10)
    image = np.full((depth, size, size), -1000.0, np.float32)
    image = _mix(image, -100.0, _soft((1 - body_r) * ay, edge))
    soft_tissue = 40.0 + 12.0 * _smooth_noise(rng, 1, size, cells=12, cells_z=1)
    image = _mix(image, soft_tissue, _soft((1 - fat - body_r) * ay, edge))

    # ribs: bright ovals just inside the fat, at angles that drift from slice to slice; drawn in
    # small patches (a full-volume pass per rib would dominate the generation time)
    rib_angles = rng.uniform(-0.25, 0.25) + np.concatenate([np.linspace(0.35, 2.8, 6), np.linspace(3.5, 5.9, 6)])
    rib_angles = rib_angles[rng.uniform(size=rib_angles.size) < 0.8]
    rib_r, half = 1 - fat - 0.045, int(np.ceil(0.045 / pixel)) + 1
    for z in range(depth):
        for angle in rib_angles:
            drift = angle + 0.25 * t[z, 0, 0] * np.sign(np.cos(angle))
            cy, cx = 0.02 + rib_r * ay * np.sin(drift), rib_r * ax * np.cos(drift)
            row, col = int((cy + 1) / pixel), int((cx + 1) / pixel)
            rows = slice(max(row - half, 0), min(row + half, size))
            cols = slice(max(col - half, 0), min(col + half, size))
            rib = _soft(0.028 - np.hypot(y[rows] - cy, x[:, cols] - cx), edge)
            image[z, rows, cols] = _mix(image[z, rows, cols], 550.0, rib)

    # lungs: two super-ellipses growing towards the base, minus the mediastinum and heart
    scale = 0.8 + 0.3 * t + rng.uniform(-0.05, 0.05)
    lungs = np.zeros((depth, size, size), np.float32)
    for side in (-1, 1):
        lung_r = _ellipse_radius(y, x, rng.uniform(-0.04, 0.02), side * ax * rng.uniform(0.43, 0.48),
                                 0.66 * ay * scale, 0.30 * ax * scale, angle=side * rng.uniform(0.0, 0.15), power=2.4)
        lungs = np.maximum(lungs, _soft((1 - lung_r) * 0.3 * ax, edge))
    heart_r = _ellipse_radius(y, x, -0.10, 0.07, 0.15 + 0.08 * t, 0.17 + 0.10 * t, angle=-0.4)
    mediastinum_r = _ellipse_radius(y, x, 0.0, 0.0, 0.5 * ay, 0.13, power=3.0)
    spine_r = np.hypot(y - (0.02 + 0.68 * ay), x) / 0.09
    organs = np.maximum(np.maximum(_soft((1 - heart_r) * 0.15, edge), _soft((1 - mediastinum_r) * 0.13, edge)),
                        _soft((1.25 - spine_r) * 0.09, edge))
    lungs *= 1 - organs
    lungs *= _soft((1 - fat - 0.08 - body_r) * ay, edge)  # keep a chest wall

    texture = 35.0 * _smooth_noise(rng, depth, size, cells=10, cells_z=4)
    dependent = 120.0 * np.clip((y - 0.1) / 0.35, 0, 1)  # gravity: denser posterior lung
    hilum = np.minimum(np.hypot(y - 0.0, x - 0.22 * ax), np.hypot(y - 0.0, x + 0.22 * ax))
    vessels_noise = _smooth_noise(rng, depth, size, cells=40, cells_z=max(depth // 2, 2))
    vessels = 650.0 * _soft(vessels_noise - (2.1 - 0.9 * np.exp(-(hilum / 0.3) ** 2)), 0.25)
    parenchyma = -870.0 + texture + dependent + vessels
    image = _mix(image, parenchyma, lungs)
    image = _mix(image, 45.0, _soft((1 - heart_r) * 0.15, edge))
    image = _mix(image, 350.0, _soft((1 - spine_r) * 0.09, edge))
    image = _mix(image, 700.0, _soft((1 - spine_r) * 0.09, edge) * _soft((spine_r - 0.8) * 0.09, edge))

    lesion_intensity, label = _lesions(rng, lungs, y, x, t, size)
    image = image + lesion_intensity
    image = image + rng.uniform(15, 30) * rng.standard_normal(image.shape, dtype=np.float32)
    spacing = (5.0, 360.0 / size, 360.0 / size)  # 5 mm slices, 36 cm field of view
    return window(image, -1000.0, 400.0), label, spacing


def _lesions(rng, lungs, y, x, t, size):
    """Ground-glass lesions inside the lungs: (HU to add, label uint8)."""
    depth = lungs.shape[0]
    count = 1 + rng.choice(4, p=[0.35, 0.35, 0.2, 0.1])  # every case has one (per-case Dice stays defined)
    added = np.zeros(lungs.shape, np.float32)
    label = np.zeros(lungs.shape, np.uint8)
    lobes = _smooth_noise(rng, depth, size, cells=12, cells_z=4)
    heterogeneity = _smooth_noise(rng, depth, size, cells=20, cells_z=4)
    for _ in range(count):
        z = rng.uniform(0, depth - 1)
        inside = np.argwhere(lungs[int(round(z))] > 0.9)
        if len(inside) == 0:
            continue
        row, col = inside[int(rng.uniform() * len(inside))]  # about the same place at any size
        cy, cx = (row + 0.5) / size * 2 - 1, (col + 0.5) / size * 2 - 1
        a, b = rng.uniform(0.06, 0.17, size=2)
        c = rng.uniform(1.5, 4.5)  # semi-axis in slices (7-22 mm)
        near = np.arange(max(0, int(z - c - 1)), min(depth, int(z + c + 2)))
        dz = ((near[:, None, None] - z) / c).astype(np.float32)
        inplane = _ellipse_radius(y, x, cy, cx, a, b, angle=rng.uniform(0, np.pi))
        radius = np.sqrt(inplane[None] ** 2 + dz**2) * (1 + 0.22 * lobes[near])
        blur = rng.uniform(0.12, 0.3)  # edge width relative to the lesion size
        profile = _soft(1 - radius, blur * 0.5) * lungs[near]
        added[near] += rng.uniform(100, 260) * profile * (1 + 0.25 * heterogeneity[near])
        label[near] |= ((radius < 1) & (lungs[near] > 0.5)).astype(np.uint8)
    return added, label


# ---------------------------------------------------------------------------- phantom-cardiac
_GROUP_SHAPE = {  # LV cavity radius, wall thickness, RV scale (normalized units; 1 = 16 cm)
    "NOR": (0.15, 0.050, 1.0), "DCM": (0.21, 0.036, 1.1), "HCM": (0.11, 0.085, 0.95),
    "MINF": (0.17, 0.045, 1.0), "RV": (0.14, 0.048, 1.5),
}


def cardiac_group(seed: int, index: int) -> str:
    """The pathology-like group of a case (drives its shape; used to stratify the split)."""
    return CARDIAC_GROUPS[int(_case_rng(seed, "cardiac", index).integers(len(CARDIAC_GROUPS)))]


def cardiac_volume(seed: int, index: int, size: int = 256, slices: int = 10):
    """One cine-MRI-like short-axis stack from base to apex: ``(image, label, spacing)``.

    Labels as ACDC: 1 RV cavity, 2 LV myocardium, 3 LV cavity (papillary muscles included).
    LV: an ellipse whose endocardium has random low-order harmonics, shrinking towards the apex
    (an ellipsoidal cap, so apical slices are solid myocardium); wall thickness varies with the
    angle (and a thinned sector for "MINF"); RV: a crescent wrapped around the septum, fading
    before the apex, with a thin unlabelled free wall; epicardial fat, lungs, liver, chest wall.
    bSSFP-like contrast (blood bright, myocardium dark), a smooth multiplicative bias field,
    Rician noise, then percentile clipping and z-scoring per volume (as for ACDC).
    """
    group = cardiac_group(seed, index)
    rng = _case_rng(seed, "cardiac", index)
    rng.integers(len(CARDIAC_GROUPS))  # consumed by cardiac_group
    y, x = _grid(size)
    depth = slices
    t = np.linspace(0, 1, depth, dtype=np.float32)[:, None, None]  # base (0) -> apex (1)
    edge = 0.6 * 2.0 / size
    radius0, thickness0, rv_scale = (v * rng.uniform(0.88, 1.12) for v in _GROUP_SHAPE[group])

    cy = rng.uniform(-0.08, 0.02) + rng.uniform(-0.04, 0.04) * t
    cx = rng.uniform(0.0, 0.12) + rng.uniform(-0.05, 0.05) * t
    dy, dx = y - cy, x - cx
    theta = np.arctan2(dy, dx)
    stretch, tilt = rng.uniform(0.88, 1.12), rng.uniform(0, np.pi)
    cos, sin = _f32(np.cos(tilt)), _f32(np.sin(tilt))
    u, v = dx * cos + dy * sin, dy * cos - dx * sin
    rho = np.sqrt((u * stretch) ** 2 + (v / stretch) ** 2)
    harmonics = sum(rng.uniform(0, 0.05) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 4))
    wall = 1 + 0.3 * np.cos(theta - rng.uniform(0, 2 * np.pi))
    if group == "MINF":  # an infarcted, thinned sector
        wall = wall * (1 - 0.55 * _soft(np.cos(theta - rng.uniform(0, 2 * np.pi)) - 0.6, 0.1))
    endo = radius0 * np.sqrt(np.clip(1 - (t / 0.9) ** 2, 0, None)) * (1 + harmonics)
    epi = (radius0 + thickness0 * wall) * np.sqrt(np.clip(1 - (t / 1.06) ** 2, 0, None)) * (1 + 0.5 * harmonics)
    epi = np.maximum(epi, endo + 0.5 * thickness0 * wall)
    lv = _soft(endo - rho, edge)
    epicardium = _soft(epi - rho, edge)

    # RV: an ellipse beside the septum, minus the LV's epicardium -> crescent; fades at the apex
    rv_angle = np.pi + rng.uniform(0.15, 0.55)
    size_rv = (radius0 + thickness0) * rv_scale * np.sqrt(np.clip(1 - (t / 0.82) ** 2, 0, None)) + 1e-3
    rv_cy = cy + 0.5 * size_rv * np.sin(rv_angle)
    rv_cx = cx + 0.5 * size_rv * np.cos(rv_angle)
    # semi-axes: 0.8 radially (x of the rotated frame), 1.5 along the septum: wraps about ±100°
    rv_r = _ellipse_radius(y, x, rv_cy, rv_cx, 1.5 * size_rv, 0.8 * size_rv, angle=rv_angle)
    rv_outline = _soft((1 - rv_r) * size_rv * 0.8, edge)
    rv_wall_outline = _soft((1.12 - rv_r) * size_rv * 0.8, edge)
    outside_lv = _soft(rho - epi - 0.004, edge)
    rv = rv_outline * outside_lv

    # papillary muscles: dark discs inside the cavity, labelled LV
    papillary = np.zeros_like(lv)
    for offset, scale in ((-0.6, rng.uniform(0.1, 0.2)), (0.6, rng.uniform(0.1, 0.2))):
        angle = np.pi / 2 + 0.3 + offset + rng.uniform(-0.2, 0.2)
        py, px = cy + 0.62 * endo * np.sin(angle), cx + 0.62 * endo * np.cos(angle)
        present = (t > 0.15) & (t < 0.75)
        papillary = np.maximum(papillary, _soft(scale * endo - np.hypot(y - py, x - px), edge) * present)

    image = np.zeros((depth, size, size), np.float32)
    body_r = _ellipse_radius(y, x, 0.05, 0.0, 0.62, 0.88, power=2.2)
    image = _mix(image, 0.85, _soft((1 - body_r) * 0.6, edge))
    image = _mix(image, 0.30, _soft((0.93 - body_r) * 0.6, edge))
    heart_zone = np.maximum(epicardium, rv_wall_outline)
    for side in (-1, 1):
        lung = _soft((1 - _ellipse_radius(y, x, 0.08, side * 0.46, 0.42, 0.27)) * 0.27, edge)
        image = _mix(image, 0.06 + 0.03 * side, lung * (1 - _soft(heart_zone - 0.5, 0.2)))
    liver = _soft((0.05 + 0.25 * t) - np.hypot(y - 0.42, x + 0.38), edge) * (t > 0.4)
    image = _mix(image, 0.36 + 0.04 * _smooth_noise(rng, depth, size, cells=12), liver)
    fat_ring = _soft(epi + 0.025 - rho, edge) * _soft(np.cos(theta - rng.uniform(0, 2 * np.pi)) + 0.2, 0.2)
    image = _mix(image, 0.8, fat_ring)
    image = _mix(image, 0.27, np.maximum(epicardium, rv_wall_outline))
    flow = 0.05 * _smooth_noise(rng, depth, size, cells=6)
    image = _mix(image, 0.9 + flow, rv)
    image = _mix(image, 0.95 + flow, lv)
    image = _mix(image, 0.35, 0.8 * papillary)  # partial volume: grey, not black
    image = image + 0.03 * _smooth_noise(rng, depth, size, cells=20, cells_z=depth)

    image = image * np.exp(0.35 * _smooth_noise(rng, depth, size, cells=3))  # coil bias field
    sigma = rng.uniform(0.03, 0.07)
    noise = rng.standard_normal((2, *image.shape), dtype=np.float32) * sigma
    image = np.sqrt((image + noise[0]) ** 2 + noise[1] ** 2)  # magnitude image: Rician noise

    label = np.zeros(image.shape, np.uint8)
    label[rv > 0.5] = 1
    label[(epicardium > 0.5) & ~(lv > 0.5)] = 2
    label[lv > 0.5] = 3
    spacing = (10.0, 320.0 / size, 320.0 / size)  # 10 mm slices, 32 cm field of view
    return normalize_percentile(image, 1, 99), label, spacing


# ---------------------------------------------------------------------------- datasets
def _load(kind: str, root, split: str, *, size: int, num_cases: int, slices_per_case: int, seed: int,
          dims: int, split_file, val_fraction: float, test_fraction: float):
    from medsegloss.data.base import SegmentationDataset
    from medsegloss.data.cache import cached_case
    from medsegloss.data.splits import resolve_split, select

    if root is not None:
        raise ValueError(f"phantom-{kind} is generated and takes no root, got root={root!r}")
    if int(num_cases) < 1 or int(slices_per_case) < 2:
        raise ValueError(f"num_cases must be >= 1 and slices_per_case >= 2, got {num_cases}, {slices_per_case}")
    ids = [f"{kind}{i:03d}" for i in range(int(num_cases))]
    group_of = (lambda case: cardiac_group(seed, int(case[len(kind):]))) if kind == "cardiac" else None
    split_dict = resolve_split(ids, split_file=split_file, seed=seed, val_fraction=val_fraction,
                               test_fraction=test_fraction, group_of=group_of)
    generate = lesion_volume if kind == "lesion" else cardiac_volume

    def make(case_id: str):
        def compute():
            image, label, spacing = generate(seed, int(case_id[len(kind):]), int(size), int(slices_per_case))
            return Case(case_id, image, label, spacing)

        return cached_case(("phantom", kind, case_id, seed, int(size), int(slices_per_case), 1), compute)

    cases = [make(case_id) for case_id in select(split_dict, split, ids)]
    names = LESION_CLASSES if kind == "lesion" else CARDIAC_CLASSES
    options = dict(size=size, num_cases=num_cases, slices_per_case=slices_per_case, seed=seed)
    return SegmentationDataset(cases, name=f"phantom-{kind}", class_names=names, dims=dims, split=split_dict,
                               split_name=split, options=options)


def load_lesion(root=None, split: str = "train", *, size: int = 256, num_cases: int = 40,
                slices_per_case: int = 16, seed: int = 0, dims: int = 2, split_file=None,
                val_fraction: float = 0.1, test_fraction: float = 0.2):
    """``phantom-lesion``: binary (background, lesion) chest CT-like phantom, 5 mm slices."""
    return _load("lesion", root, split, size=size, num_cases=num_cases, slices_per_case=slices_per_case,
                 seed=seed, dims=dims, split_file=split_file, val_fraction=val_fraction, test_fraction=test_fraction)


def load_cardiac(root=None, split: str = "train", *, size: int = 256, num_cases: int = 40,
                 slices_per_case: int = 10, seed: int = 0, dims: int = 2, split_file=None,
                 val_fraction: float = 0.1, test_fraction: float = 0.2):
    """``phantom-cardiac``: 4 classes (background, RV, MYO, LV) cine-MRI-like phantom, 10 mm
    slices; split stratified by the pathology-like group."""
    return _load("cardiac", root, split, size=size, num_cases=num_cases, slices_per_case=slices_per_case,
                 seed=seed, dims=dims, split_file=split_file, val_fraction=val_fraction, test_fraction=test_fraction)
