"""Speed of every registered loss, forward + backward, as a ratio to ``F.cross_entropy`` (binary
case: ``F.binary_cross_entropy_with_logits``) on the same logits, side by side with MONAI,
segmentation_models_pytorch and kornia where they implement the same loss.

    python benchmarks/losses.py                      # full: (16,4,256²), (2,4,96³), (16,1,256²)
    python benchmarks/losses.py --quick              # smaller tensors, fewer repetitions
    python benchmarks/losses.py --losses dice,dice_ce,hd --cases 2-D --threads 1 --json speed.json

Method: for each loss, the baseline, our implementation and the peers run interleaved (one call
each per repetition, so machine noise hits them alike); each reports the minimum over the
repetitions, divided by the baseline's minimum *from the same group*. Losses that take distance
maps are timed with the target's maps precomputed (``dist=``, as a data loader caches them) and
again computing them per call. Where a peer's definition matches ours, the values are compared
(max |difference| over the cases). Prints markdown tables; ``--json`` writes every number.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _peers  # noqa: E402

from medsegloss import losses  # noqa: E402
from medsegloss.distance import signed_distance_map  # noqa: E402

CASES = {  # name: (logits shape, quick logits shape)
    "2-D": ((16, 4, 256, 256), (8, 4, 128, 128)),
    "3-D": ((2, 4, 96, 96, 96), (1, 4, 48, 48, 48)),
    "binary": ((16, 1, 256, 256), (8, 1, 128, 128)),
}


def make_case(shape, seed=0):
    """Logits like an early network (standard normal) and a target with blobs, so distance maps and
    connected components are realistic rather than salt-and-pepper."""
    generator = torch.Generator().manual_seed(seed)
    n, c, *spatial = shape
    logits = torch.randn(shape, generator=generator).requires_grad_(True)
    # smooth random field -> thresholded into max(c, 2) labels with blob-like regions
    field = torch.randn((n, max(c, 2), *[max(s // 16, 2) for s in spatial]), generator=generator)
    mode = "bilinear" if len(spatial) == 2 else "trilinear"
    field = F.interpolate(field, size=spatial, mode=mode, align_corners=False)
    labels = field.argmax(1)
    return logits, labels


def time_call(fn, logits, labels) -> float:
    logits.grad = None
    start = time.perf_counter()
    fn(logits, labels).backward()
    return time.perf_counter() - start


def implementations(name, channels, peers, labels, spacing=None):
    """``{label: (fn, peer or None)}`` for one loss: ours (cached and per-call distance maps where
    the loss takes them) and the peers of the same loss."""
    loss = losses.get(name)
    impls = {}
    if getattr(loss, "needs_distance", False):
        dist = signed_distance_map(labels, num_classes=channels, spacing=spacing)
        impls["ours"] = (lambda x, y: loss(x, y, dist=dist), None)
        impls["ours, dist per call"] = (lambda x, y: loss(x, y), None)
    else:
        impls["ours"] = (loss, None)
    for peer in peers:
        if peer.loss == name:
            impls[peer.library] = (peer.fn, peer)
    return impls


def run_group(name, impls, baseline, logits, labels, repetitions):
    """Interleaved repetitions of baseline + implementations; min times and value checks."""
    all_impls, values = {}, {}
    for key, (fn, peer) in {"baseline": (baseline, None), **impls}.items():  # warm-up, value check
        try:
            with torch.no_grad():
                values[key] = float(fn(logits.detach(), labels))
        except Exception as error:
            if peer is None:  # ours must run
                raise
            print(f"  {name}: {key} cannot run this case ({type(error).__name__}: {error})", file=sys.stderr)
            continue
        all_impls[key] = (fn, peer)
    best = {key: float("inf") for key in all_impls}
    for _ in range(repetitions):
        for key, (fn, _) in all_impls.items():
            best[key] = min(best[key], time_call(fn, logits, labels))
    result = {"baseline_ms": best["baseline"] * 1e3, "ours_value": values["ours"], "impls": {}}
    for key, (fn, peer) in list(all_impls.items())[1:]:
        entry = {"ms": best[key] * 1e3, "ratio": best[key] / best["baseline"], "value": values[key]}
        if peer is not None:
            entry.update(same=peer.same, note=peer.note)
            if peer.same:
                entry["abs_diff"] = abs(values["ours"] - peer.scale * values[key])
        result["impls"][key] = entry
    return result


def new_loss_peers(channels: int) -> list:
    """Peers of the losses added for issue #14 (mcc, lovasz, gwdl, cldice, dice_cldice, log_hd,
    gdl_focal, unified_focal), in ``_peers.Peer`` form; ``same`` only where the definitions match
    (tests/losses/ checks those equalities in float64)."""
    Peer = _peers.Peer
    peers = []
    binary = channels == 1
    monai = _peers._optional("monai.losses")
    if monai is not None:
        with_channel = _peers._float_labels_with_channel if binary else _peers._labels_with_channel
        activation = dict(sigmoid=True) if binary else dict(softmax=True, to_onehot_y=True)
        matrix = 1.0 - torch.eye(2 if binary else channels)
        gwdl = monai.GeneralizedWassersteinDiceLoss(dist_matrix=matrix)
        peers += [
            Peer("MONAI", "mcc", with_channel(monai.MCCLoss(**activation)), True),
            Peer("MONAI", "gwdl", (lambda x, y: gwdl(torch.cat([torch.zeros_like(x), x], 1), y)) if binary
                 else gwdl, True, note="binary: as two-channel logits [0, x]"),
            Peer("MONAI", "cldice", with_channel(monai.SoftclDiceLoss(smooth=1e-30, include_background=binary,
                                                                       **activation)), binary,
                 note="" if binary else "kept classes pooled into one score"),
            Peer("MONAI", "dice_cldice",
                 with_channel(monai.SoftDiceclDiceLoss(smooth=1e-30, include_background=binary, **activation)),
                 binary, note="" if binary else "clDice: kept classes pooled into one score"),
            Peer("MONAI", "log_hd", with_channel(monai.LogHausdorffDTLoss(include_background=binary,
                                                                          **{k: v for k, v in activation.items()
                                                                             if k != "to_onehot_y"}))
                 if binary else _peers._onehot_labels(monai.LogHausdorffDTLoss(softmax=True), channels), False,
                 note="log after the batch mean (ours per sample)" + ("" if binary else "; background kept")),
            Peer("MONAI", "gdl_focal", with_channel(monai.GeneralizedDiceFocalLoss(**activation)), False,
                 note="unnormalised GDL weights" + ("" if binary else "; sigmoid focal term")),
        ]
        if binary:
            unified = monai.AsymmetricUnifiedFocalLoss(weight=0.5, delta=0.6, gamma=0.5)
            peers.append(Peer("MONAI", "unified_focal", lambda x, y: unified(torch.sigmoid(x), y.unsqueeze(1).float()),
                              False, note="focal part averaged over the two classes (ours summed)"))
    smp = _peers.load_smp_losses()
    if smp is not None:
        lovasz = smp.LovaszLoss("binary" if binary else "multiclass", per_image=True)
        peers.append(Peer("SMP", "lovasz", _peers._labels_with_channel(lovasz) if binary else lovasz, True))
        if binary:
            mcc = smp.MCCLoss()
            peers.append(Peer("SMP", "mcc", lambda x, y: mcc(torch.sigmoid(x), y.unsqueeze(1).float()), False,
                              note="batch-pooled counts, eps on every count"))
    return peers


def run_case(case, shape, names, repetitions):
    logits, labels = make_case(shape)
    channels = shape[1]
    binary = channels == 1
    baseline = (lambda x, y: F.binary_cross_entropy_with_logits(x[:, 0], y.float())) if binary else F.cross_entropy
    peers = (_peers.binary_peers() if binary else _peers.multiclass_peers(channels)) + new_loss_peers(channels)
    results = {}
    for name in names:
        if losses.info(name).binary_only and not binary:
            continue
        impls = implementations(name, channels, peers, labels)
        try:
            results[name] = run_group(name, impls, baseline, logits, labels, repetitions)
        except Exception as error:  # a peer that cannot take this case (e.g. 2-D only): report, go on
            print(f"  {case} {name}: {type(error).__name__}: {error}", file=sys.stderr)
            continue
        ours = results[name]["impls"]["ours"]
        print(f"  {case:7s} {name:18s} ours {ours['ratio']:6.2f}x  ({ours['ms']:.1f} ms)", file=sys.stderr)
    return results


def markdown(all_results, cases) -> str:
    libraries = ["MONAI", "SMP", "kornia"]
    lines = []
    for case in cases:
        results = all_results[case]["losses"]
        base = "BCE" if case == "binary" else "CE"
        lines += [
            f"\n### {case} {tuple(all_results[case]['shape'])}: time ÷ {base} "
            f"(min {base} {min(r['baseline_ms'] for r in results.values()):.1f} ms)\n",
            "| loss | ours | ours, dist per call | " + " | ".join(libraries) + " | max abs diff (same definition) |",
            "|---|---:|---:|" + "---:|" * len(libraries) + "---|",
        ]
        for name, result in results.items():
            impls = result["impls"]
            cells = [f"{impls['ours']['ratio']:.2f}"]
            per_call = impls.get("ours, dist per call")
            cells.append(f"{per_call['ratio']:.2f}" if per_call else "")
            diffs = []
            for library in libraries:
                entry = impls.get(library)
                if entry is None:
                    cells.append("")
                    continue
                cells.append(f"{entry['ratio']:.2f}" + ("" if entry["same"] else "*"))
                if entry["same"]:
                    diffs.append(f"{library} {entry['abs_diff']:.1e}")
            lines.append(f"| {name} | " + " | ".join(cells) + " | " + ", ".join(diffs) + " |")
    lines.append("\n`*`: a different definition (timed for reference; see benchmarks/_peers.py).")
    return "\n".join(lines)


def goals(all_results) -> list[str]:
    """The targets: dice_ce ≤ 1.6× CE; ours no slower than the fastest peer of the same loss."""
    out = []
    for case, data in all_results.items():
        results = data["losses"]
        if "dice_ce" in results and case != "binary":
            ratio = results["dice_ce"]["impls"]["ours"]["ratio"]
            out.append(f"{case}: dice_ce {ratio:.2f}x CE ({'meets' if ratio <= 1.6 else 'MISSES'} ≤ 1.6x)")
        for name, result in results.items():
            peers = {key: entry for key, entry in result["impls"].items() if not key.startswith("ours")}
            if not peers:
                continue
            fastest = min(peers, key=lambda key: peers[key]["ratio"])
            ours = result["impls"]["ours"]["ratio"]
            if ours > peers[fastest]["ratio"]:
                out.append(f"{case}: {name} ours {ours:.2f}x is slower than {fastest} {peers[fastest]['ratio']:.2f}x")
    return out


def write_json(path: str, data) -> None:
    path = Path(path)
    with tempfile.NamedTemporaryFile("w", dir=path.parent or ".", delete=False, suffix=".tmp") as handle:
        json.dump(data, handle, indent=1)
    os.replace(handle.name, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller tensors and 3 repetitions")
    parser.add_argument("--losses", default=None, help="comma-separated registry names (default: all)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--repetitions", type=int, default=None, help="default 5 (3 with --quick)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's); 1 is steadier on a shared, loaded machine")
    parser.add_argument("--json", default=None, help="write all results here")
    args = parser.parse_args(argv)
    names = losses.available() if args.losses is None else [name.strip() for name in args.losses.split(",")]
    for name in names:
        losses.info(name)  # unknown names fail here, with suggestions
    cases = [case.strip() for case in args.cases.split(",")]
    unknown = [case for case in cases if case not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {list(CASES)}")
    repetitions = args.repetitions or (3 if args.quick else 5)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {repetitions} repetitions", file=sys.stderr)
    all_results = {}
    for case in cases:
        shape = CASES[case][1 if args.quick else 0]
        all_results[case] = {"shape": list(shape), "losses": run_case(case, shape, names, repetitions)}
    print(markdown(all_results, cases))
    for line in goals(all_results):
        print("-", line)
    if args.json:
        write_json(args.json, {"torch": torch.__version__, "threads": torch.get_num_threads(),
                               "repetitions": repetitions, "cases": all_results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
