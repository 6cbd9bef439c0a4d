"""`medsegloss metrics`: the registered metrics as a table."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="medsegloss metrics", description="List the registered metrics.")
    parser.add_argument("--kind", choices=("overlap", "surface"), help="only this kind of metric")
    parser.add_argument("--options", action="store_true", help="also print each metric's options and defaults")
    args = parser.parse_args(argv)

    from medsegloss import metrics

    header = ("name", "kind", "better", "unit", "empty masks (NaN or x: empty='nan' or 'worst')")
    rows = []
    for name in metrics.available(args.kind):
        info = metrics.info(name)
        rows.append((name, info.kind, "higher" if info.higher_is_better else "lower", info.unit, info.empty_rule))
    widths = [max(len(row[i]) for row in rows + [header]) for i in range(4)]
    print("  ".join(value.ljust(width) for value, width in zip(header, widths)) + "  " + header[4])
    for row in rows:
        print("  ".join(value.ljust(width) for value, width in zip(row, widths)) + "  " + row[4])
        if args.options:
            options = ", ".join(f"{key}={value!r}" for key, value in metrics.info(row[0]).options.items())
            print(" " * (sum(widths) + 8) + options)
    return 0
