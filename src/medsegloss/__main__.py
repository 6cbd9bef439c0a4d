"""`python -m medsegloss ...` (and `torchrun -m medsegloss train ...`)."""

from medsegloss.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
