"""Whether a finished labeling run counts as a success, for a script or a scheduler reading the
exit code: a run that labeled no row fails (:class:`~promptclf.errors.NoLabelsError`, exit code 7),
and so does one whose coverage is under ``--min-coverage`` (:class:`~promptclf.errors.CoverageError`,
exit code 8). Both come after the output and the run folder are written, so nothing is lost.
"""

from __future__ import annotations

from ..errors import CoverageError, NoLabelsError
from ..runs import LabelSummary


def check_outcome(run: LabelSummary, min_coverage: float | None = None, output: str | None = None) -> None:
    """Raise when ``run`` labeled no row ``ok``, or fewer than ``min_coverage`` of its rows."""
    where = f"; see pred_reason in {output}" if output else ""
    rerun = f"; a rerun of the same command would send {run.rerun_rows:,} rows again" if run.rerun_rows else ""
    counts = ", ".join(f"{k} {v:,}" for k, v in sorted(run.statuses.items()))
    if run.n_items and not run.statuses.get("ok"):
        raise NoLabelsError(f"no row was labeled ({counts}){rerun}{where}")
    if min_coverage is not None and run.n_items and run.coverage < min_coverage:
        raise CoverageError(
            f"coverage {run.coverage:.1%} is below --min-coverage {min_coverage:.1%} ({counts}){rerun}{where}"
        )
