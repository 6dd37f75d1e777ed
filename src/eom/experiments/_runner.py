"""The one resumable runner: the state machine every experiment runs under.

    running ──► complete
        ├─────► diverged     (DivergenceError: the loss or θ became non-finite)
        ├─────► failed       (EomError or any other exception; the message is kept)
        └─────► interrupted  (Ctrl-C; rerun the same command to resume)

An experiment describes its chunks of work as a `body(runner)` that appends rows and checkpoints
to the `RunDir` and calls `runner.chunk_done()` after each; the runner writes results.json (from
the experiment's `summarize(status, message)`) on every way out, and settles an `--overwrite`:
the run it set aside is deleted after the new run's first chunk, and restored if the new run
ends before that. A process killed outright leaves status `running` with its lock released;
`eom.report` reads that as interrupted.
"""

from __future__ import annotations

from collections.abc import Callable

from .._errors import DivergenceError, EomError
from ._store import PREVIOUS, RunDir

INTERRUPTED = "Interrupted; rerun the same command (same --out) to resume where it stopped."


class Runner:
    """Runs one experiment's body in a locked `RunDir` and records how it ended."""

    def __init__(self, rd: RunDir, summarize: Callable[[str, str | None], dict]):
        self.rd = rd
        self.summarize = summarize
        self.committed = False

    def chunk_done(self) -> None:
        """A chunk (rows + checkpoint) is on disk: an overwritten run can now be deleted."""
        if not self.committed:
            self.rd.commit()
            self.committed = True

    def execute(self, body: Callable[[Runner], None]) -> dict:
        status, message = "running", None
        try:
            body(self)
            status = "complete"
        except DivergenceError as exc:
            status, message = "diverged", str(exc)
            raise
        except EomError as exc:
            status, message = "failed", str(exc)
            raise
        except KeyboardInterrupt:
            status, message = "interrupted", INTERRUPTED
            raise
        except Exception as exc:
            status, message = "failed", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            results = self._finish(status, message)
        return results

    def _finish(self, status: str, message: str | None) -> dict:
        if status != "complete" and not self.committed and (self.rd.path / PREVIOUS).is_dir():
            self.rd.restore()  # the new run never wrote a chunk: the old one comes back whole
            return {"status": status, "message": message}
        if status == "complete":
            self.chunk_done()
        try:
            results = self.summarize(status, message)
        except EomError as exc:  # e.g. a damaged metrics.csv: keep the outcome regardless
            results = {"status": status, "message": f"{message or ''} ({exc})".strip()}
        self.rd.write_results(results)
        return results
