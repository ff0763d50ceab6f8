"""The ``promptclf`` click group: error mapping, SIGTERM handling, ``--debug``.

Its own module so the command modules import it without importing the package that imports them.
"""

from __future__ import annotations

import os
import signal
import sys

import click

from ..errors import PromptclfError


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


class _Group(click.Group):
    def invoke(self, ctx: click.Context):  # type: ignore[no-untyped-def]
        # SIGTERM (kill, a CI timeout) stops a run like Ctrl-C: finished work is written first. The
        # previous handler comes back afterwards, so a host process (a test runner) keeps its own.
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            return super().invoke(ctx)
        except PromptclfError as exc:
            if os.environ.get("PROMPTCLF_DEBUG"):
                raise
            click.echo(f"promptclf: error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            if os.environ.get("PROMPTCLF_DEBUG"):
                raise
            click.echo("promptclf: interrupted; rerun the same command to resume", err=True)
            sys.exit(130)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise  # usage errors, --help, --version: click prints and exits as usual
        except Exception as exc:
            # Last resort: a bug or a library failure no stage turned into a PromptclfError still gets
            # one line, not a traceback, for a user who did not ask for one.
            if os.environ.get("PROMPTCLF_DEBUG"):
                raise
            click.echo(f"promptclf: error: {_one_line(exc)}; rerun with --debug for the traceback", err=True)
            sys.exit(1)
        finally:
            signal.signal(signal.SIGTERM, previous)


def _one_line(exc: BaseException) -> str:
    """``exc``'s message squeezed to one line, with its type: ``what (ValueError)``."""
    text = " ".join(str(exc).split()) or "unexpected failure"
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{text} ({type(exc).__name__})"


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="promptclf")
@click.option("--debug", is_flag=True, help="Show tracebacks (same as PROMPTCLF_DEBUG=1).")
@click.option("-q", "--quiet", "quiet", is_flag=True, help="Only warnings and errors on stderr (no info lines).")
@click.option("-v", "--verbose", "verbose", is_flag=True, help="Also debug lines on stderr.")
def main(debug: bool, quiet: bool, verbose: bool) -> None:
    """Turn an LLM into a text classifier, then make that classifier cheap."""
    from .logs import install

    if debug:
        os.environ["PROMPTCLF_DEBUG"] = "1"
    install(-1 if quiet else 1 if verbose else 0)
