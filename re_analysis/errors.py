"""The one error type users see for bad input.

Every message names the problem and the fix in one sentence; the CLI prints it on one
line and exits with code 2.
"""


class ReAnalysisError(ValueError):
    """Bad input: unknown name, bad parameter, missing file, mismatched shapes."""
