"""The worker's table manager: Faust's, with the Recovery changes of this package.

Installed with the app's TableManager setting (streams/app.py); TableManager.recovery is
Faust's hook that builds the Recovery service.
"""

from __future__ import annotations

from faust.tables.manager import TableManager as FaustTableManager

from streams.patches import written_for
from streams.patches.resume_streams import StopFlowBeforeSeek
from streams.patches.stale_stores import RebuildStaleStores
from streams.patches.transactions import CommittedRecovery


class Recovery(RebuildStaleStores, StopFlowBeforeSeek, CommittedRecovery):
    """A stale store is rebuilt (stale_stores.py); streams resume with nothing in flight
    (resume_streams.py); a changelog written in transactions is recovered to its end
    (transactions.py)."""


class TableManager(FaustTableManager):
    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = Recovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery  # type: ignore[return-value]


written_for("faust-streaming", "0.15.3")
