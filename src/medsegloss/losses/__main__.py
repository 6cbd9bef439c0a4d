"""``python -m medsegloss.losses --markdown [--table catalogue|families]``: print the catalogue
table generated from the registry (the one in docs/losses.md, or the README's family table)."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medsegloss.losses", description=__doc__)
    parser.add_argument("--markdown", action="store_true", required=True, help="print a Markdown table")
    parser.add_argument("--table", choices=("catalogue", "families"), default="catalogue",
                        help="catalogue: one row per loss (docs/losses.md); families: the README's table")
    args = parser.parse_args(argv)
    from medsegloss.losses import catalogue_markdown

    print(catalogue_markdown(args.table), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
