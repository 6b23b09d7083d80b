"""The one exception type the CLI turns into a one-line error and exit code 2."""


class EvofoolError(Exception):
    """A user-facing error: bad input, missing files, incompatible runs.

    The CLI prints ``error: <message>`` on one line and exits with code 2;
    no traceback is shown.
    """
