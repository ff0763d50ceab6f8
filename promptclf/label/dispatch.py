"""Run one job through the runner for its provider's kind: scoring (local model), batch API or chat.

Shared by the flat path (:func:`promptclf.label.stream.run_job`) and each stage of a label tree
(:mod:`promptclf.label.hierarchy`), so both pick a runner by the same rule.
"""

from __future__ import annotations

from ..providers.base import Provider
from ..runs import Calibration
from .batch_runner import BatchRunner
from .chat_runner import ChatRunner
from .context import RunContext
from .jobs import Job
from .prompts import PromptBuilder
from .scoring_runner import run_scoring


def run_runner(ctx: RunContext[Provider], job: Job, prompts: PromptBuilder) -> Calibration | None:
    """Label ``job``'s rows with the runner for the provider's kind (``--batch-api``: the batch runner);
    returns what ``--calibrate`` divided by, for a scoring provider."""
    provider = ctx.provider
    if provider.kind == "scoring":
        return run_scoring(ctx.using(provider), job, prompts)
    if ctx.options.batch_api:
        BatchRunner(ctx.using(provider), job, prompts).run()
    else:
        ChatRunner(ctx.using(provider), job, prompts).run()
    return None
