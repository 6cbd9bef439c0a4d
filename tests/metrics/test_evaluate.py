"""evaluate / summarize / write_*: multi-class tables against per-class binary calls, the
registry contract, and the CLI."""

import json
import math

import numpy as np
import pytest
import torch

from medsegloss import metrics
from medsegloss.metrics._cli import main as cli_main
from medsegloss.metrics.overlap import confusion

ALL = metrics.available()


def label_batch(shape, num_classes, seed):
    """Blobby label maps: a prediction that agrees with the target on most voxels."""
    rng = np.random.default_rng(seed)
    target = np.zeros(shape, np.int64)
    for c in range(1, num_classes):
        center = [rng.integers(2, n - 2) for n in shape]
        grid = np.ogrid[tuple(slice(0, n) for n in shape)]
        target[sum((g - m) ** 2 for g, m in zip(grid, center)) < rng.integers(4, 12)] = c
    pred = target.copy()
    flip = rng.random(shape) < 0.1
    pred[flip] = rng.integers(0, num_classes, flip.sum())
    return pred, target


def batch(n, shape, num_classes, seed):
    preds, targets = zip(*[label_batch(shape, num_classes, seed + i) for i in range(n)])
    return np.stack(preds), np.stack(targets)


def test_rows_equal_per_class_binary_calls():
    pred, target = batch(3, (14, 16), 4, 0)
    target[2][target[2] == 3] = 0  # class 3 absent from case 2's reference ...
    pred[2][pred[2] == 3] = 0  # ... and its prediction: "both"
    pred[1][pred[1] == 2] = 0  # class 2 missed in case 1: "pred"
    spacing = (0.8, 1.5)
    rows = metrics.evaluate(pred, target, 4, spacing=spacing, metrics=ALL, case_ids=["a", "b", "c"],
                            empty="worst", metric_options={"nsd": {"tolerance": 1.6}})
    assert [(row["case"], row["class"]) for row in rows] == [(case, c) for case in "abc" for c in (1, 2, 3)]
    for row in rows:
        i = "abc".index(row["case"])
        p, r = pred[i] == row["class"], target[i] == row["class"]
        for name in ALL:
            options = {"tolerance": 1.6} if name == "nsd" else {}
            args = (p, r, spacing) if metrics.info(name).kind == "surface" else (p, r)
            expected = metrics.get(name, empty="worst", **options)(*args)
            assert row[name] == pytest.approx(expected, rel=1e-12), (row, name)
    states = {(row["case"], row["class"]): row["empty"] for row in rows}
    assert states[("c", 3)] == "both" and states[("b", 2)] == "pred" and states[("a", 1)] == "none"


def test_bincount_counts_equal_direct_counts():
    pred, target = label_batch((8, 9, 10), 4, 3)
    rows = metrics.evaluate([pred], [target], 4, metrics=("precision", "recall", "pixel_error"),
                            include_background=True)
    assert [row["class"] for row in rows] == [0, 1, 2, 3]
    for row in rows:
        p, r = pred == row["class"], target == row["class"]
        tp, fp, fn = int((p & r).sum()), int((p & ~r).sum()), int((~p & r).sum())
        assert tp > 0 and confusion(p, r)[:3] == (tp, fp, fn)
        assert row["precision"] == pytest.approx(tp / (tp + fp), rel=1e-12)
        assert row["recall"] == pytest.approx(tp / (tp + fn), rel=1e-12)
        assert row["pixel_error"] == pytest.approx((fp + fn) / pred.size, rel=1e-12)


def test_list_of_cases_with_different_sizes_and_spacings():
    a = label_batch((6, 8, 7), 3, 4)
    b = label_batch((5, 9, 9), 3, 5)
    spacings = [(2.5, 1.0, 1.0), (1.0, 0.7, 0.7)]
    rows = metrics.evaluate([a[0], torch.from_numpy(b[0])], [a[1], b[1]], 3, spacing=spacings,
                            metrics=("dice", "hd"))
    assert len(rows) == 4
    assert rows[3]["hd"] == metrics.hd(b[0] == 2, b[1] == 2, spacings[1])
    assert rows[0]["hd"] == metrics.hd(a[0] == 1, a[1] == 1, spacings[0])
    as_array = metrics.evaluate([a[0], b[0]], [a[1], b[1]], 3, spacing=np.array(spacings), metrics=("dice", "hd"))
    assert as_array == rows


def test_torch_batch_equals_numpy_batch():
    pred, target = batch(2, (12, 12), 3, 6)
    from_numpy = metrics.evaluate(pred, target, 3, metrics=("dice", "assd"))
    from_torch = metrics.evaluate(torch.from_numpy(pred), torch.from_numpy(target), 3, metrics=("dice", "assd"))
    assert from_numpy == from_torch


def test_summarize_statistics_and_counts():
    rows = [
        {"case": "0", "class": 1, "dice": 0.5, "hd": 2.0, "empty": "none"},
        {"case": "1", "class": 1, "dice": 0.0, "hd": math.nan, "empty": "pred"},
        {"case": "2", "class": 1, "dice": 1.0, "hd": math.nan, "empty": "both"},
        {"case": "0", "class": 2, "dice": 0.25, "hd": 4.0, "empty": "none"},
        {"case": "1", "class": 2, "dice": 0.0, "hd": math.nan, "empty": "ref"},
    ]
    summary = {(s["class"], s["metric"]): s for s in metrics.summarize(rows)}
    dice1 = summary[(1, "dice")]
    assert dice1["mean"] == pytest.approx(0.5) and dice1["median"] == 0.5
    assert dice1["std"] == pytest.approx(np.std([0.5, 0.0, 1.0]))
    assert (dice1["n"], dice1["n_nan"], dice1["n_empty_both"], dice1["n_empty_pred"], dice1["n_empty_ref"]) == \
        (3, 0, 1, 1, 0)
    hd1 = summary[(1, "hd")]
    assert (hd1["mean"], hd1["n"], hd1["n_nan"]) == (2.0, 3, 2)
    everything = summary[("all", "hd")]
    assert (everything["mean"], everything["n"], everything["n_nan"], everything["n_empty_ref"]) == (3.0, 5, 3, 1)
    assert summary[("all", "dice")]["mean"] == pytest.approx(1.75 / 5)
    nothing = metrics.summarize([{"case": "0", "class": 1, "hd": math.nan, "empty": "pred"}])[0]
    assert math.isnan(nothing["mean"]) and nothing["n_nan"] == 1


def test_evaluate_then_summarize_counts_empty_cases():
    pred, target = batch(3, (10, 10), 3, 9)
    assert all((target == 1).any(axis=(1, 2)))
    pred[0][pred[0] == 1] = 0  # class 1 missed in case 0
    rows = metrics.evaluate(pred, target, 3, metrics=("dice", "hd95"))
    hd95 = next(s for s in metrics.summarize(rows) if s["class"] == 1 and s["metric"] == "hd95")
    assert hd95["n"] == 3 and hd95["n_nan"] == 1 and hd95["n_empty_pred"] == 1
    assert hd95["mean"] == pytest.approx(np.mean([row["hd95"] for row in rows[2::2]]))


def test_write_csv_and_json_atomically(tmp_path):
    rows = [{"case": "0", "class": 1, "dice": 0.5, "hd": math.nan, "empty": "pred"}]
    json_path = metrics.write_json(rows, tmp_path / "out" / "rows.json")
    assert json.loads(json_path.read_text()) == [{"case": "0", "class": 1, "dice": 0.5, "hd": None, "empty": "pred"}]
    csv_path = metrics.write_csv(rows, tmp_path / "out" / "rows.csv")
    assert csv_path.read_text().splitlines() == ["case,class,dice,hd,empty", "0,1,0.5,nan,pred"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["rows.csv", "rows.json"]  # no temp files


def test_bad_input_is_a_clear_error():
    pred, target = batch(2, (8, 8), 3, 8)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\].*\[0, 3\]"):
        metrics.evaluate(pred, np.where(target == 2, 3, target), 3)
    with pytest.raises(ValueError, match="fractional"):
        metrics.evaluate(pred + 0.5, target, 3)
    with pytest.raises(ValueError, match=r"prediction shape \(8, 8\) != target shape \(8, 9\)"):
        metrics.evaluate([pred[0]], [np.zeros((8, 9), int)], 3)
    with pytest.raises(ValueError, match="2 cases but target_labels has 1"):
        metrics.evaluate(pred, target[:1], 3)
    with pytest.raises(ValueError, match=r"wrap a single case in a list"):
        metrics.evaluate(pred[0], target[0], 3)
    with pytest.raises(ValueError, match="Did you mean: dice"):
        metrics.evaluate(pred, target, 3, metrics=("dise",))
    with pytest.raises(ValueError, match="case_ids has 1 names for 2 cases"):
        metrics.evaluate(pred, target, 3, case_ids=["x"])
    with pytest.raises(ValueError, match="per-case entries"):
        metrics.evaluate(pred, target, 3, spacing=[(1, 1)] * 3, metrics=("hd",))
    with pytest.raises(ValueError, match=r"one value per spatial axis \(2\)"):
        metrics.evaluate(pred, target, 3, spacing=(1, 1, 1), metrics=("hd",))
    with pytest.raises(TypeError, match="no option"):
        metrics.evaluate(pred, target, 3, metrics=("nsd",), metric_options={"nsd": {"tol": 1}})
    with pytest.raises(ValueError, match="empty must be one of"):
        metrics.evaluate(pred, target, 3, empty="skip")
    with pytest.raises(ValueError, match="num_classes"):
        metrics.evaluate(pred, target, 0)


@pytest.mark.parametrize("name", ALL)
def test_registry_contract(name):
    """Perfect scores its recorded perfect value; a worse prediction scores worse in the
    recorded direction; get() binds options and rejects unknown ones."""
    info = metrics.info(name)
    ref = np.zeros((16, 16), bool)
    ref[4:11, 3:12] = True
    near, far = np.roll(ref, 1, axis=1), np.roll(np.roll(ref, 3, axis=1), 2, axis=0)
    function = metrics.get(name)
    assert function(ref, ref) == info.perfect
    if name != "volume_similarity":  # sizes are equal: it cannot tell
        better, worse = function(near, ref), function(far, ref)
        assert (better > worse) if info.higher_is_better else (better < worse)
    with pytest.raises(TypeError, match="no option"):
        metrics.get(name, colour=1)
    if name not in ("pixel_error", "specificity"):  # these stay their formula when a mask is empty
        worst = info.worst if info.worst is not None else metrics.surface.image_diagonal(ref.shape, (1, 1))
        assert metrics.get(name, empty="worst")(np.zeros_like(ref), ref) == worst


def test_registry_lists_every_metric_of_the_issue():
    assert set(ALL) >= {"dice", "iou", "pixel_error", "precision", "recall", "specificity", "volume_similarity",
                        "hd", "hd95", "assd", "masd", "nsd"}
    assert metrics.available("surface") == ["hd", "hd95", "hd95_pooled", "assd", "masd", "nsd"]
    with pytest.raises(ValueError, match="Did you mean: hd95"):
        metrics.info("hd96")


def test_cli_lists_the_metrics(capsys):
    assert cli_main([]) == 0
    out = capsys.readouterr().out
    for name in ALL:
        assert f"\n{name} " in out
    assert cli_main(["--kind", "surface", "--options"]) == 0
    out = capsys.readouterr().out
    assert "tolerance=1.0" in out and "dice" not in out


def test_metric_options_and_the_nsd_shortcut():
    pred, target = batch(2, (18, 20), 3, 11)
    spacing = (1.0, 0.6)
    options = {"nsd": {"tolerance": 0.9}, "hd95": {"pooled": True}}
    full = metrics.evaluate(pred, target, 3, spacing=spacing, metrics=("nsd", "hd95"), metric_options=options)
    only_nsd = metrics.evaluate(pred, target, 3, spacing=spacing, metrics=("nsd",),
                                metric_options={"nsd": {"tolerance": 0.9}})
    assert [row["nsd"] for row in full] == [row["nsd"] for row in only_nsd]
    for row in full:
        p, r = pred[int(row["case"])] == row["class"], target[int(row["case"])] == row["class"]
        assert row["hd95"] == metrics.hd95_pooled(p, r, spacing)
        assert row["nsd"] == metrics.nsd(p, r, spacing, tolerance=0.9)


def test_multilabel_rows_are_per_region_binary_calls():
    """Overlapping regions: each region's mask (probabilities thresholded at 0.5) scored as a
    binary pair, surface metrics included; the plain label-map path cannot hold the overlap."""
    rng = np.random.default_rng(3)
    target = np.zeros((2, 3, 12, 12), np.uint8)
    target[:, 0, 2:9, 2:9] = 1
    target[:, 1, 5:11, 4:10] = 1  # overlaps region 0
    target[1, 2] = 0  # region 2 empty in case 1
    target[0, 2, 1:4, 6:11] = 1
    probabilities = np.clip(target + rng.normal(0, 0.3, target.shape), 0, 1)
    names = ["dice", "iou", "hd95", "nsd"]
    rows = metrics.evaluate(torch.from_numpy(probabilities), target, 3, metrics=names, multilabel=True,
                            spacing=(1.0, 2.0))
    assert [(row["case"], row["class"]) for row in rows] == [(c, r) for c in ("0", "1") for r in range(3)]
    for row in rows:
        pred = probabilities[int(row["case"]), row["class"]] > 0.5
        ref = target[int(row["case"]), row["class"]].astype(bool)
        for name in names:
            options = {"spacing": (1.0, 2.0)} if metrics.info(name).kind == "surface" else {}
            expected = float(metrics.get(name)(pred, ref, **options))
            assert row[name] == pytest.approx(expected, nan_ok=True), (row, name)
    assert rows[5]["empty"] in ("both", "ref")  # case 1, region 2: empty target
    with pytest.raises(ValueError, match=r"must be multi-hot \(R, \*spatial\) with R = num_classes = 4"):
        metrics.evaluate(probabilities, target, 4, multilabel=True)
    with pytest.raises(ValueError, match="must be 0/1 or bool masks"):
        metrics.evaluate(probabilities, probabilities, 3, multilabel=True)
    with pytest.raises(ValueError, match=r"multi-hot batch \(N, R, H, W\)"):
        metrics.evaluate(probabilities[:, 0], target[:, 0], 3, multilabel=True)
