"""`medsegloss losses`: the catalogue as a table."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="medsegloss losses", description="List the registered losses.")
    parser.add_argument("--family", help="only this family (distribution, region, boundary, compound)")
    parser.add_argument("--options", action="store_true", help="also print each loss's options and defaults")
    args = parser.parse_args(argv)

    from medsegloss import losses

    from medsegloss.cli import print_table

    infos = [losses.info(name) for name in losses.available(args.family)]
    rows = [(info.name, info.family, info.paper, info.summary) for info in infos]
    details = [", ".join(f"{k}={v!r}" for k, v in info.options.items()) for info in infos] if args.options else None
    print_table(("name", "family", "paper", "formula / summary"), rows, details)
    return 0
