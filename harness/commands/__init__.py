"""One module per ``harness`` subcommand; see :mod:`harness.cli`."""
