"""Case names from file names that are not UTF-8 (Python decodes their bytes to lone
surrogates) are drawn in the overlay figure, not a reason to drop it; a figure that still fails
is reported in one line (issue #23)."""

import os

import numpy as np

from medsegloss.experiment.report import figures


def test_an_overlay_with_a_non_utf8_case_name_is_drawn(tmp_path):
    name = os.fsdecode(b"caf\xe9_01")  # 'caf\udce9_01', as os.listdir gives it
    label = np.zeros((8, 8), np.int64)
    label[2:5, 2:6] = 1
    panel = {"image": np.random.default_rng(0).normal(size=(8, 8)), "label": label,
             "predictions": {"ce": label}, "dice": {"ce": 1.0}, "name": name}
    path = figures.plot_overlays([panel], ["ce"], tmp_path / "overlays.png", title=f"{name}: test",
                                 class_names=["background", os.fsdecode(b"l\xe9sion")])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert figures.printable(name) == "caf\ufffd_01"


def test_a_failing_figure_is_reported_in_one_line(capsys):
    def fails():
        raise TypeError("set_text(): incompatible function arguments.\n    1. (self, string: str, ...)")

    drawn = {}
    figures._draw(drawn, "Predictions on x", fails)
    error = capsys.readouterr().err
    assert drawn == {} and error == ("report: no figure 'Predictions on x': TypeError: set_text(): incompatible "
                                     "function arguments.\n")
