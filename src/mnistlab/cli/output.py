"""Console output for the CLI: rich on a terminal, and wide enough tables in pipes and logs."""

from __future__ import annotations

import sys

from rich.console import Console

PIPE_WIDTH = 160  # rich would wrap at 80 columns when output is not a terminal


def console() -> Console:
    """A rich console sized to the terminal, or PIPE_WIDTH columns when piped."""
    return Console(width=None if sys.stdout.isatty() else PIPE_WIDTH)
