"""`medsegloss losses`: the catalogue as a table."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="medsegloss losses", description="List the registered losses.")
    parser.add_argument("--family", choices=None, help="only this family (distribution, region, boundary, compound)")
    parser.add_argument("--options", action="store_true", help="also print each loss's options and defaults")
    args = parser.parse_args(argv)

    from medsegloss import losses

    names = losses.available(args.family)
    rows = [(name, losses.info(name).family, losses.info(name).paper, losses.info(name).summary) for name in names]
    widths = [max(len(row[i]) for row in rows + [("name", "family", "paper", "")]) for i in range(3)]
    header = ("name", "family", "paper", "formula / summary")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)) + "  " + header[3])
    for row in rows:
        print("  ".join(value.ljust(width) for value, width in zip(row, widths)) + "  " + row[3])
        if args.options:
            options = ", ".join(f"{k}={v!r}" for k, v in losses.info(row[0]).options.items())
            print(" " * (sum(widths) + 6) + options)
    return 0
