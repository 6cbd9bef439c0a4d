"""The `medsegloss` entry point and the catalogue listings."""

import pytest

from medsegloss import losses
from medsegloss.cli import main, print_table


def test_losses_lists_every_registered_loss_with_family_and_paper(capsys):
    assert main(["losses"]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = {line.split()[0]: line for line in lines[1:]}
    assert set(listed) == set(losses.available())
    for name in losses.available():
        assert losses.info(name).family in listed[name]


def test_losses_family_filter_and_options(capsys):
    assert main(["losses", "--family", "boundary", "--options"]) == 0
    out = capsys.readouterr().out
    assert "boundary_weighted" in out and "dice_ce" not in out
    assert "spacing=" in out  # the options line under each loss


def test_unknown_command_suggests_the_closest(capsys):
    assert main(["trian"]) == 2
    assert "Did you mean: train" in capsys.readouterr().err


def test_print_table_aligns_columns(capsys):
    print_table(("a", "bb", "rest"), [("xxx", "y", "free text"), ("z", "wwww", "more")], ["opt=1", ""])
    lines = capsys.readouterr().out.splitlines()
    assert [line.index(line.split()[1]) for line in (lines[0], lines[1])] == [5, 5]
    assert lines[2].strip() == "opt=1" and len(lines) == 4


def test_unknown_family_is_a_clear_error():
    with pytest.raises(ValueError, match="family must be one of"):
        main(["losses", "--family", "regoin"])
