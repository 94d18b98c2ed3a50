"""Errors the CLI turns into one line on stderr and exit status 2."""


class UsageError(Exception):
    """Bad input from the user: the message names the problem and the fix, on one line."""
