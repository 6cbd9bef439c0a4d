"""`medsegloss metrics`: the registered metrics as a table."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="medsegloss metrics", description="List the registered metrics.")
    parser.add_argument("--kind", choices=("overlap", "surface"), help="only this kind of metric")
    parser.add_argument("--options", action="store_true", help="also print each metric's options and defaults")
    args = parser.parse_args(argv)

    from medsegloss import metrics

    from medsegloss.cli import print_table

    header = ("name", "kind", "better", "unit", "margin", "empty masks (NaN or x: empty='nan' or 'worst')")
    infos = [metrics.info(name) for name in metrics.available(args.kind)]
    rows = [(info.name, info.kind, "higher" if info.higher_is_better else "lower", info.unit, f"{info.margin:g}",
             info.empty_rule) for info in infos]
    details = [", ".join(f"{k}={v!r}" for k, v in info.options.items()) for info in infos] if args.options else None
    print_table(header, rows, details)
    return 0
