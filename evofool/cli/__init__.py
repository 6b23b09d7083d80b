"""The ``evofool`` command line: one module per command, all registered here.

Every user error (``EvofoolError``, bad options, missing files) is shown as a single
``error: ...`` line with exit code 2, never a traceback.
"""

from __future__ import annotations

import signal
import sys
import threading

import click

from evofool import __version__
from evofool.cli import experiments, export, models, run, studies
from evofool.errors import EvofoolError


class OneLineError(click.ClickException):
    """A ClickException that prints ``error: message`` and nothing else."""

    exit_code = 2

    def show(self, file=None) -> None:  # noqa: D102 - click API
        click.echo(f"error: {self.format_message()}", err=True)


# Files are written as new files renamed in place, so what was there before is intact.
INTERRUPTED = "interrupted (Ctrl-C); files written before are intact"


class Interrupted(OneLineError):
    """Ctrl-C outside a run's generations (loading, exporting...): one line, the shell's 130."""

    exit_code = 130


class _CtrlC:
    """Whether Ctrl-C (SIGINT) came while a command ran: Python's own handler, remembered.

    A KeyboardInterrupt raised inside a lazy import can surface as another error (seen:
    numpy's ``numpy.ma`` half imported under matplotlib, then an AttributeError); with this
    flag such an error still reads as the interruption it was.
    """

    seen = False

    @classmethod
    def handler(cls, signum, frame):
        cls.seen = True
        raise KeyboardInterrupt


class EvofoolGroup(click.Group):
    """A click group whose commands report user errors on one line (exit 2)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EvofoolError as exc:
            raise OneLineError(str(exc)) from None
        except KeyboardInterrupt:
            # click's own handling prints "Aborted!" and exits 1.
            raise Interrupted(INTERRUPTED) from None
        except click.UsageError as exc:
            raise OneLineError(exc.format_message()) from None
        except OSError as exc:
            if _CtrlC.seen:
                raise Interrupted(INTERRUPTED) from None
            # Disk full, permission denied, ...: what was written stays; say what failed.
            raise OneLineError(f"{exc.strerror or exc}"
                               + (f": {exc.filename}" if getattr(exc, "filename", None) else "")) from None
        except Exception:
            if _CtrlC.seen:  # the interruption, surfacing as some other error
                raise Interrupted(INTERRUPTED) from None
            raise


@click.group(cls=EvofoolGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="evofool")
def cli() -> None:
    """Evolve fooling images: pictures a classifier labels with near certainty."""


# Each command lives in its own module of this package (their heavy imports stay inside the
# command functions, so ``evofool --help`` is quick).
for _module in (run, models, export, experiments, studies):
    for _command in _module.COMMANDS:
        cli.add_command(_command)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    own_handler = (threading.current_thread() is threading.main_thread()
                   and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    if own_handler:
        signal.signal(signal.SIGINT, _CtrlC.handler)
    try:
        cli.main(args=argv, prog_name="evofool")
    except KeyboardInterrupt:  # pragma: no cover - interactive
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    finally:
        if own_handler:
            signal.signal(signal.SIGINT, signal.default_int_handler)
