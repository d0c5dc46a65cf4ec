"""Where the ``batch`` command used to live; it is now in ``backtrack_sampler.cli.batch``."""

from backtrack_sampler.cli.batch import add_batch_command, run_batch_command

__all__ = ["add_batch_command", "run_batch_command"]
