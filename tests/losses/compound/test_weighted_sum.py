"""WeightedSum (``losses.compound.weighted_sum``): the total is the weighted sum of its terms,
each term's last value is kept for logging, and the weights may change between steps."""

from __future__ import annotations

import pytest

from conftest import random_labels, random_logits
from medsegloss import losses
from medsegloss.losses import WeightedSum, build


def test_last_values_and_settable_weights():
    loss = build("gdl + 0.01*boundary")
    assert loss.needs_distance
    logits, labels = random_logits((2, 3, 8, 7)), random_labels((2, 8, 7), 3)
    first = loss(logits, labels)
    assert set(loss.last_values) == {"gdl", "boundary"}
    loss.weights["boundary"] = 1.0
    second = loss(logits, labels)
    delta = float((second - first).detach())
    assert delta == pytest.approx(0.99 * loss.last_values["boundary"], rel=1e-5, abs=1e-7)


def test_weighted_sum_validates_terms():
    with pytest.raises(ValueError, match="at least one term"):
        WeightedSum([])
    with pytest.raises(ValueError, match="unique"):
        WeightedSum([("a", 1.0, losses.get("ce")), ("a", 1.0, losses.get("dice"))])
