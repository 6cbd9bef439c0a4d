"""Property-based fuzzing of the ``folder`` dataset's mask value -> class mapping.

Hypothesis draws 1-3 masks, each written as a real file (8-bit PNG, 16-bit PNG, float TIFF or
NIfTI of several integer and float data types), with value sets that may hold negative values,
fractions, NaN, both binary conventions, large values (2**40) or more than 256 values, and
``mask_values`` / ``num_classes`` options (sometimes inconsistent). An oracle written from the
documented rules (docs/data.md, "folder") says what each case must give: the exact labels of
every case, or a :class:`DatasetError` (a ``ValueError`` for a bad option) whose message names
the offending file or argument. ``derandomize=True`` keeps CI reproducible.
"""

from __future__ import annotations

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
nibabel = pytest.importorskip("nibabel")
Image = pytest.importorskip("PIL.Image")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from medsegloss.data import DatasetError, get_dataset  # noqa: E402

SHAPE = (3, 4)
# format -> (dtype written, the values it can hold)
FORMATS = {
    "png8": (np.uint8, st.integers(0, 255)),
    "png16": (np.uint16, st.integers(0, 65535)),
    "nifti_int16": (np.int16, st.integers(-3, 300)),
    "nifti_int64": (np.int64, st.sampled_from([-1, 0, 1, 2, 3, 255, 2**40, 2**62])),
    "nifti_float32": (np.float32, st.sampled_from([-1.0, 0.0, 1.0, 2.0, 255.0, 0.5, 0.7, float("nan")])),
    "tiff_float": (np.float32, st.sampled_from([0.0, 1.0, 2.0, 0.7, float("inf")])),
}
COMMON = st.sampled_from([0, 1, 255, 2, 3])  # the usual values, so files often agree


@st.composite
def folders(draw):
    """``(masks: {file name: array}, options)``."""
    masks = {}
    for index in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(list(FORMATS)))
        dtype, values = FORMATS[kind]
        if draw(st.integers(0, 9)) == 0 and kind == "nifti_int16":
            listed, shape = list(range(-1, 299)), (15, 20)  # 300 distinct values: an image, not a mask
        else:
            pool = draw(st.lists(values if dtype == np.float32 else st.one_of(COMMON, values), min_size=1, max_size=4))
            picks = draw(st.lists(st.integers(0, len(pool) - 1), min_size=12, max_size=12))
            listed, shape = [pool[k] for k in picks], SHAPE
        if np.issubdtype(dtype, np.integer):  # what the format can hold
            listed = [min(max(v, int(np.iinfo(dtype).min)), int(np.iinfo(dtype).max)) for v in listed]
        suffix = {"png8": ".png", "png16": ".png", "tiff_float": ".tif"}.get(kind, ".nii.gz")
        masks[f"m{index}{suffix}"] = np.array(listed, dtype=dtype).reshape(shape)
    options = {}
    found = sorted({v for m in masks.values() for v in np.unique(m).tolist() if np.isfinite(v)})
    choice = draw(st.sampled_from(["none", "none", "mask_values", "num_classes"]))
    if choice == "mask_values" and found:
        declared = draw(st.permutations(found[:256]))
        if draw(st.booleans()) and len(declared) > 1:
            declared = declared[:-1]  # one value left undeclared
        if draw(st.integers(0, 5)) == 0:
            declared = [*declared, declared[0]]  # a duplicate
        options["mask_values"] = list(declared)
    elif choice == "num_classes":
        options["num_classes"] = draw(st.integers(0, 5))
    return masks, options


def _write(root, masks):
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for name, mask in masks.items():
        stem = name.split(".")[0]
        Image.fromarray(rng.integers(0, 256, mask.shape, dtype=np.uint8)).save(root / "images" / f"{stem}.png")
        if name.endswith(".nii.gz"):
            image = nibabel.Nifti1Image(mask.T, np.eye(4), dtype=mask.dtype)  # NIfTI stores (x, y)
            nibabel.save(image, str(root / "masks" / name))
        else:
            Image.fromarray(mask).save(root / "masks" / name)


def expected(masks, options) -> tuple[str, object]:
    """What the documented rules say: ``("labels", {stem: labels})`` or ``("error", words)``
    where ``words`` must all appear in the message."""
    for name, mask in masks.items():
        if not np.isfinite(mask.astype(np.float64)).all():
            return "error", (name, "non-finite")
        if (mask != np.round(mask)).any():
            return "error", (name, "non-integer")
        if np.unique(mask).size > 256:
            return "error", (name, "distinct values")
    values = {name: set(np.unique(mask).astype(np.int64).tolist()) for name, mask in masks.items()}
    found = set().union(*values.values())
    num_classes = options.get("num_classes")
    if num_classes is not None and not 1 <= num_classes <= 256:
        return "error", ("num_classes",)
    if "mask_values" in options:
        declared = options["mask_values"]
        if len(set(declared)) != len(declared):
            return "error", ("mask_values", "more than once")
        mapping = {int(v): k for k, v in enumerate(declared)}
    elif any(v < 0 for v in found):
        return "error", ("negative", next(name for name in masks if min(values[name]) < 0))
    elif found <= {0, 1, 255} and {1, 255} <= found and num_classes is None:
        return "error", ("mix the binary conventions",)
    elif found <= {0, 1} or found <= {0, 255}:
        mapping = {0: 0, 1: 1, 255: 1}
    elif num_classes is not None:
        mapping = {k: k for k in range(num_classes)}
    elif len(found) > 256:
        return "error", ("distinct values",)
    else:
        mapping = {v: k for k, v in enumerate(sorted(found))}
    for name in masks:
        if values[name] - set(mapping):
            return "error", (name, "outside the declared classes")
    classes = max(mapping.values()) + 1
    if num_classes is not None and classes > num_classes:
        return "error", ("num_classes",)
    labels = {name.split(".")[0]: np.vectorize(lambda v: mapping[int(v)], otypes=[np.int64])(mask)
              for name, mask in masks.items()}
    return "labels", labels


_BINARY = np.array([[0, 1, 1, 0]] * 3, np.uint8)


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=folders())
@example(case=({"m0.png": _BINARY, "m1.png": _BINARY * 255}, {}))  # the two binary conventions
@example(case=({"m0.png": _BINARY, "m1.png": _BINARY * 255}, {"mask_values": [0, 255, 1]}))
@example(case=({"m0.nii.gz": np.arange(-1, 299, dtype=np.int16).reshape(15, 20)}, {}))  # 300 values
@example(case=({"m0.nii.gz": (_BINARY.astype(np.int64) - 1) * 2**40}, {}))  # negative and huge
@example(case=({"m0.nii.gz": _BINARY.astype(np.int64) * 2**40 + 3}, {}))  # huge
@example(case=({"m0.nii.gz": _BINARY.astype(np.int16) - 1}, {"mask_values": [0, -1]}))
@example(case=({"m0.tif": _BINARY * np.float32(0.7)}, {}))  # a fraction in a float TIFF
def test_fuzz_folder_mapping_is_exact_or_a_named_error(tmp_path_factory, case):
    masks, options = case
    root = tmp_path_factory.mktemp("folder")
    _write(root, masks)
    outcome, detail = expected(masks, options)
    if outcome == "error":
        with pytest.raises(ValueError) as raised:  # DatasetError is a ValueError
            get_dataset("folder", root, split="all", size=None, **options)
        message = str(raised.value)
        assert all(word in message for word in detail), f"{masks} {options}: {message!r} lacks {detail}"
        return
    data = get_dataset("folder", root, split="all", size=None, **options)
    for stem, labels in detail.items():
        got = data.case(stem).label[0]
        np.testing.assert_array_equal(got, labels, err_msg=f"{stem}: {masks} {options}")
    assert all(data.case(stem).label.max() < data.num_classes for stem in data.cases)
