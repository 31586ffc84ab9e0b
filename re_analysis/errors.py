"""The error types users see for bad input and for damaged or busy run directories.

Every message names the problem and the fix in one sentence; the CLI prints it on one
line and exits with code 2.
"""

from __future__ import annotations

from pathlib import Path


class ReAnalysisError(ValueError):
    """Bad input: unknown name, bad parameter, missing file, mismatched shapes."""


class DamagedArtifactError(ReAnalysisError):
    """A file of a run is missing, truncated, altered or unreadable.

    ``path`` is the file, ``run_dir`` the run directory it belongs to (``None`` outside any
    run), ``problem`` what is wrong (``missing``, ``size differs ...``, ``checksum differs``,
    ``unreadable ...``) and ``fix`` the command that rebuilds it.
    """

    def __init__(self, path: str | Path, run_dir: str | Path | None, problem: str, fix: str):
        self.path = Path(path)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.problem = problem
        self.fix = fix
        super().__init__(f"{self.path} is damaged ({problem}); {fix}")


class RunBusyError(ReAnalysisError):
    """Another process holds the lock of a run directory (and we were told not to wait)."""
