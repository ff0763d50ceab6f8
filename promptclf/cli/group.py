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
        # SIGTERM (kill, a CI timeout) stops a run like Ctrl-C: finished work is written first.
        signal.signal(signal.SIGTERM, _raise_interrupt)
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


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="promptclf")
@click.option("--debug", is_flag=True, help="Show tracebacks (same as PROMPTCLF_DEBUG=1).")
def main(debug: bool) -> None:
    """Turn an LLM into a text classifier, then make that classifier cheap."""
    if debug:
        os.environ["PROMPTCLF_DEBUG"] = "1"
