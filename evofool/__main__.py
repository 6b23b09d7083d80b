"""``python -m evofool`` and the ``evofool`` console script."""

import sys


def entry() -> None:
    """Imports the CLI (torch with it: a second or more), then runs it; Ctrl-C while importing
    is one line and the shell's 130, as it is later (it was a traceback from inside torch)."""
    try:
        from evofool.cli import main
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted (Ctrl-C) before the command started; nothing was written\n")
        sys.exit(130)
    main()


if __name__ == "__main__":
    entry()
