"""The command's own errors: each becomes one line on stderr and an exit status."""

from __future__ import annotations

__all__ = ["CommandError", "UsageError"]


class CommandError(Exception):
    """The command could not do its job (exit status 1); the message is the whole story."""

    exit_status = 1


class UsageError(CommandError):
    """Bad input: an option, a file or a setting (exit status 2, as for argparse's own errors)."""

    exit_status = 2
