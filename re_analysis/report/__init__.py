"""What the book's chapters show, as tested functions: each chapter's cells call these and
display what they return (tables, prose, figures), so a papermill re-run executes tested code.

- :mod:`re_analysis.report.conclusions`: the verdict per claim, what it rules out, what the
  design could detect, the judges' ceilings and the caveats of a run.
"""

from .conclusions import (claim_by_judge, conclusion_caveats, inconclusive_reasons, judge_ceiling_table,
                          verdict_effect, verdict_overview)

__all__ = ["verdict_overview", "verdict_effect", "inconclusive_reasons", "claim_by_judge", "judge_ceiling_table",
           "conclusion_caveats"]
