"""Tiny nnU-Net v2 raw datasets written as nnU-Net documents them (NIfTI through nibabel), for the
tests of multi-channel prediction, regions end to end and sweeps over several datasets; imported
as ``from nnunet_fixtures import write_nnunet`` (tests/ is on sys.path, see conftest.py)."""

from __future__ import annotations

import json

import numpy as np

AFFINE = np.array([[0.0, -0.8, 0.0, 10.0], [0.9, 0.0, 0.0, -5.0], [0.0, 0.0, 2.5, 3.0], [0, 0, 0, 1]])


def write_nifti(path, array_xyz, affine=AFFINE):
    import nibabel

    image = nibabel.Nifti1Image(np.asarray(array_xyz), affine)
    image.header["descrip"] = b"medsegloss test"
    nibabel.save(image, str(path))


def blob_label(shape_xyz, rng, values=(1, 2)) -> np.ndarray:
    """A label volume with a box of each value at a random place (some foreground in every case)."""
    label = np.zeros(shape_xyz, np.uint8)
    for value in values:
        corner = [int(rng.integers(0, max(1, n - n // 2))) for n in shape_xyz]
        box = tuple(slice(c, c + max(1, n // 3)) for c, n in zip(corner, shape_xyz))
        label[box] = value
    return label


def write_nnunet(root, *, labels, channels=("CT", "T2"), cases=6, shape_xyz=(16, 16, 4), values=(1, 2),
                 seed=0) -> dict:
    """An nnU-Net v2 raw dataset under ``root``; returns ``{case: [channel files]}``."""
    rng = np.random.default_rng(seed)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    files = {}
    for k in range(cases):
        case = f"case_{k:03d}"
        label = blob_label(shape_xyz, rng, values)
        write_nifti(root / "labelsTr" / f"{case}.nii.gz", label)
        files[case] = []
        for c, name in enumerate(channels):
            image = rng.normal(40 if name == "CT" else 300, 25, shape_xyz).astype(np.float32) + 60.0 * (label > 0)
            path = root / "imagesTr" / f"{case}_{c:04d}.nii.gz"
            write_nifti(path, image)
            files[case].append(path)
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {str(c): name for c, name in enumerate(channels)}, "labels": labels,
        "numTraining": cases, "file_ending": ".nii.gz"}, indent=1))
    return files


def edit_dataset_json(root, edit) -> None:
    """Rewrite ``root/dataset.json`` with ``edit(content)``: None deletes it, a str is written as
    is (broken JSON), anything else as JSON."""
    path = root / "dataset.json"
    content = edit(json.loads(path.read_text()))
    if content is None:
        path.unlink()
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
