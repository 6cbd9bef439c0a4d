"""Segmentation metrics: binary-mask functions, a registry, and multi-class evaluation tables.

>>> import numpy as np
>>> from medsegloss import metrics
>>> ref = np.zeros((16, 16), bool); ref[4:10, 4:10] = True
>>> pred = np.roll(ref, 2, axis=1)                 # the square moved by 2 voxels
>>> metrics.dice(pred, ref), metrics.hd(pred, ref, spacing=(1.0, 0.5))
(0.6666666666666666, 1.0)
>>> rows = metrics.evaluate(np.stack([pred, ref]).astype(int), np.stack([ref, ref]).astype(int),
...                         num_classes=2, metrics=("dice", "hd95"))
>>> [(row["case"], row["class"], row["dice"], row["hd95"]) for row in rows]
[('0', 1, 0.6666666666666666, 2.0), ('1', 1, 1.0, 0.0)]
>>> [(s["metric"], s["mean"], s["n"]) for s in metrics.summarize(rows)]
[('dice', 0.8333333333333333, 2), ('hd95', 1.0, 2)]

Binary functions take ``pred, ref``: NumPy arrays or torch tensors, 2-D or 3-D, bool or 0/1;
surface metrics also ``spacing`` (one value per axis, array-axis order; default 1) and return
spacing units. Overlap: ``dice``, ``iou``, ``pixel_error``, ``precision``, ``recall``
(``sensitivity``), ``specificity``, ``volume_similarity``. Surface: ``hd``, ``hd95``
(``pooled=True`` for medpy's definition; ``hd95_pooled`` in tables), ``assd``, ``masd``, ``nsd``.

Empty masks
-----------
One argument, ``empty="nan"`` (default) or ``"worst"``, shared by every metric and by
:func:`evaluate`. "NaN / x" reads: NaN with ``empty="nan"``, x with ``empty="worst"``;
"diagonal" is the image diagonal in spacing units, ``sqrt(Σ (n_i·s_i)²)``.

=================================  ==========  =========================  =========================
metric                             both empty  only prediction empty      only reference empty
                                               (missed)                   (spurious)
=================================  ==========  =========================  =========================
dice, iou, volume_similarity       1           0                          0
pixel_error                        0           (fp + fn) / voxels         (fp + fn) / voxels
precision                          1           NaN / 0                    0
recall (sensitivity)               1           0                          NaN / 0
specificity                        1           tn / (tn + fp)             tn / (tn + fp)
hd, hd95, hd95_pooled, assd, masd  NaN / 0     NaN / diagonal             NaN / diagonal
nsd                                NaN / 1     NaN / 0                    NaN / 0
=================================  ==========  =========================  =========================

(Specificity is undefined only when the reference has no background: 1 if the prediction has
none either, else NaN / 0.) Every :func:`evaluate` row says which case it was (``"empty"``:
``none``, ``both``, ``pred``, ``ref``) and :func:`summarize` counts them and the NaN values it
left out of each mean, so no case is dropped silently.
"""

from medsegloss.metrics._inputs import EMPTY_POLICIES
from medsegloss.metrics._registry import KINDS, MetricInfo, available, check_names, get, lookup as info, register

# importing the metric modules registers their metrics
from medsegloss.metrics import overlap, surface  # noqa: E402,F401  isort:skip
from medsegloss.metrics.overlap import *  # noqa: E402,F401,F403
from medsegloss.metrics.surface import *  # noqa: E402,F401,F403
from medsegloss.metrics.table import evaluate, summarize, write_csv, write_json  # noqa: E402

__all__ = ["EMPTY_POLICIES", "KINDS", "MetricInfo", "available", "check_names", "evaluate", "get", "info", "register",
           "summarize", "write_csv", "write_json"]
__all__ += overlap.__all__ + surface.__all__
