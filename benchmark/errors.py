"""Exceptions that the CLI turns into a one-line message and exit code 2."""


class InputError(ValueError):
    """Invalid user input: a file, a config value or a command-line argument.

    The message names the offending file and line, or the key, and says what to do.
    """


class DataNotFoundError(InputError):
    """A data set could be found neither on disk nor on the Hugging Face hub."""
