"""``python -m evofool`` and the ``evofool`` console script."""

import os
import signal
import sys


def entry() -> None:
    """Imports the CLI (torch with it: a second or more), then runs it; Ctrl-C while importing
    is one line and the shell's 130, as it is later (it was a traceback from inside torch).
    Once the command has ended, a Ctrl-C during the interpreter's shutdown ends the process
    at once with 130 (it was a KeyboardInterrupt traceback from a weakref callback)."""
    try:
        from evofool.cli import main
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted (Ctrl-C) before the command started; nothing was written\n")
        sys.exit(130)
    try:
        main()
    finally:
        signal.signal(signal.SIGINT, _exit_interrupted)


def _exit_interrupted(signum, frame) -> None:
    """Ctrl-C after the command: what it printed is flushed, then the process ends (130)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed pipe: nothing more to keep
            pass
    os._exit(130)


if __name__ == "__main__":
    entry()
