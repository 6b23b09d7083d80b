"""The one exception type the CLI turns into a one-line error and exit code 2."""


class EvofoolError(Exception):
    """A user-facing error: bad input, missing files, incompatible runs.

    The CLI prints ``error: <message>`` on one line and exits with code 2;
    no traceback is shown.
    """


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (its type's name if it has none): for one-line
    errors that quote another library's (ONNX Runtime, the exporter, Ray)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
