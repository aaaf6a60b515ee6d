"""The error the ``verl-cov`` command reports as one line and exit code 2: input the user can fix."""


class UsageError(ValueError):
    """Bad input (a file, a key, an option); the message is meant for the user."""
