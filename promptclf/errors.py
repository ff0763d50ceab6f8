"""One exception hierarchy for promptclf.

Every error a user can cause or fix derives from :class:`PromptclfError`. The CLI maps
each class to an exit code and prints one line (``PROMPTCLF_DEBUG=1`` or ``--debug``
shows the traceback). Messages name the fix: the missing column *and* the columns
that exist, the env var to set, the extra to install.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


class PromptclfError(Exception):
    """Base class; ``exit_code`` is what the CLI exits with.

    ``partial``: when a labeling run in memory stops (Ctrl-C, a rejected key), every input row,
    those it did not get to marked ``error`` (:meth:`promptclf.label.labeler.Labeler.label`).
    """

    exit_code = 1
    partial: pd.DataFrame | None = None


class InputError(PromptclfError):
    """Bad input file, column, label set or option value."""

    exit_code = 2


class ConfigError(PromptclfError):
    """Inconsistent options or a recipe/config file that does not validate."""

    exit_code = 2


class MissingDependencyError(PromptclfError):
    """An optional package is not installed; the message says which extra to install."""

    exit_code = 3


class ProviderError(PromptclfError):
    """A provider failed in a way retries could not fix."""

    exit_code = 4


class AuthenticationError(ProviderError):
    """The API key is missing or rejected. Never retried."""

    exit_code = 5


class TransientProviderError(ProviderError):
    """429, 5xx, timeout, dropped connection: worth retrying.

    ``retry_after`` carries the server's Retry-After (seconds) when it sent one.
    """

    def __init__(self, message: str, retry_after: float | None = None, status: int | None = None):
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class ProviderConnectionError(TransientProviderError):
    """The connection to the provider failed (refused, reset, DNS): nothing answered."""


class ProviderUnavailableError(ProviderError):
    """The circuit breaker tripped: the provider kept failing with no success, so the run stopped
    sending. The rows not labeled yet are left ``unsent``; rerun the same command to resume them."""


class ResponseFormatError(ProviderError):
    """The response could not be parsed into the response model (truncated JSON, ...)."""


class TrainingError(PromptclfError):
    """Distillation cannot run as asked (one class only, no GPU for QLoRA, ...)."""

    exit_code = 6


class NoLabelsError(PromptclfError):
    """A labeling run finished with no row labeled ``ok``: a script must not take it for a success."""

    exit_code = 7


class CoverageError(PromptclfError):
    """A labeling run labeled fewer rows than ``--min-coverage`` asks for."""

    exit_code = 8


class Interrupted(PromptclfError):
    """Ctrl-C: work done so far is saved; rerun the same command to resume."""

    exit_code = 130


def require(module: str, extra: str, purpose: str) -> object:
    """Import ``module`` lazily, or raise :class:`MissingDependencyError` with an install hint."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            f"{purpose} needs the '{module}' package: pip install 'promptclf[{extra}]'"
        ) from exc
