"""How long-running engine code (a demo, preparing a sample) reports its stages: any object with
`stage` and `advance`, such as the CLI's progress bars (orchestration/cli/common.py), or
`NO_PROGRESS` when nobody is listening."""

from __future__ import annotations

from typing import Optional, Protocol


class Progress(Protocol):
    def stage(self, description: str, total: Optional[int] = None) -> None:
        """A new stage starts; `total` when its steps are counted (`advance`)."""

    def advance(self, n: int = 1) -> None:
        """`n` more steps of the current stage are done."""


class _NoProgress:
    def stage(self, description: str, total: Optional[int] = None) -> None: ...

    def advance(self, n: int = 1) -> None: ...


NO_PROGRESS: Progress = _NoProgress()
