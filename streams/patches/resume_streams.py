"""Streams resume from their committed offsets, with nothing delivered in between.

When table recovery ends, faust-streaming 0.15 (Recovery.on_recovery_completed) resumes the
stream partitions, seeks them to their committed offsets, then clears every stream's
queue (FlowControlEvent.resume) and resumes the consumer's flow. The consumer's flow is
still on from reading the changelogs, so during and after the seek the fetcher already
hands records to the streams, and the clear throws them away. The fetcher goes on after
them; when its next record of that partition comes, the consumer, whose read offset the
seek set back to the committed one, takes the offsets in between for a gap (as in a
compacted topic), counts them as acknowledged, and commits them: records never processed,
with no error and nothing in the log. A SIGKILLed worker's successor lost 1,043 parcels
this way (13 envelopes of one stage-2 partition), in one run in three of issue 18's
three-SIGKILL crash test.

Stopping the flow first, as Faust does when a rebalance starts, leaves nothing in flight:
whatever reached a queue before is cleared and read again from the committed offsets,
and the flow starts again only after the seek and the clear.
"""

from __future__ import annotations

from faust.tables.recovery import Recovery as FaustRecovery

from streams.patches import written_for


class StopFlowBeforeSeek(FaustRecovery):
    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        # Faust resumes the flow at the end (or the next rebalance does, if one started)
        self.app.consumer.stop_flow()
        await super().on_recovery_completed(generation_id)


written_for("faust-streaming", "0.15.3")
