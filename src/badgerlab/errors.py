"""The user-error base class: the CLI turns these into one line on stderr and exit code 2."""

__all__ = ["UserError"]


class UserError(ValueError):
    """A mistake in what the user asked for (name, key, value, path, missing data)."""
