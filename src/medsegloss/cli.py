"""The `medsegloss` command. Each subcommand lives beside the code it drives and is imported only
when called, so `medsegloss losses` does not pay for matplotlib or the data loaders."""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module, function taking argv, one-line help)
COMMANDS = {
    "losses": ("medsegloss.losses._cli", "main", "list the registered losses with family and paper"),
    "metrics": ("medsegloss.metrics._cli", "main", "list the registered metrics"),
    "datasets": ("medsegloss.data._cli", "main", "list the datasets"),
    "train": ("medsegloss.experiment.train_cli", "main", "train a UNet with one loss"),
    "predict": ("medsegloss.experiment.predict", "main", "segment NIfTI volumes or PNG images"),
    "bench": ("medsegloss.experiment.bench", "main", "run the controlled loss benchmark"),
    "report": ("medsegloss.experiment.report", "main", "write the report of benchmark runs"),
}


def _usage() -> str:
    lines = ["usage: medsegloss COMMAND [options]   (medsegloss COMMAND --help for its options)", ""]
    lines += [f"  {name:<9} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    return "\n".join(lines)


def print_table(header: tuple[str, ...], rows: list[tuple[str, ...]], details: list[str] | None = None) -> None:
    """Rows as aligned columns, the last column left ragged; ``details[i]`` (if given and
    non-empty) is printed indented under row ``i`` (the options listings)."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    indent = " " * (sum(widths) + 2 * len(widths))
    for index, row in enumerate([header, *rows]):
        print("  ".join(value.ljust(width) for value, width in zip(row, widths)) + "  " + row[-1])
        if details and index > 0 and details[index - 1]:
            print(indent + details[index - 1])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from medsegloss import __version__

        print(__version__)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        from medsegloss._checks import did_you_mean

        print(f"medsegloss: unknown command {command!r}.{did_you_mean(command, COMMANDS)}\n\n{_usage()}",
              file=sys.stderr)
        return 2
    module_name, function_name, _ = COMMANDS[command]
    function = getattr(importlib.import_module(module_name), function_name)
    try:
        return int(function(rest) or 0)
    except BrokenPipeError:  # `medsegloss losses | head`: the reader left; not an error
        sys.stderr.close()
        return 0
