"""The live view of `make run`: a true rate however rarely it renders, input and lag beside
it, and a dead child named with its exit and log (issues 14 and 22)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from aiokafka import TopicPartition
from rich.console import Console

from streams.console import Dashboard, Rate, backlog
from streams.settings import Settings
from streams.supervise import spawn


class Clock:
    """A clock the test moves: renders as far apart as it likes."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def text(board: Dashboard) -> str:
    console = Console(record=True, width=220, color_system=None)
    console.print(board.render())
    return console.export_text()


def decisions(board: Dashboard, n: int) -> None:
    for _ in range(n):
        board.add(board.s.topic("decisions_topic"), {})


def test_rate_counts_decisions_over_wall_time_when_renders_are_far_apart() -> None:
    clock = Clock()
    board = Dashboard(Settings(), clock=clock)
    decisions(board, 800)
    clock.now += 8.0  # the first render comes 8 s after the start: more than the window
    assert board.rate() == 100.0
    assert "100 decisions/s" in text(board)
    decisions(board, 3000)
    clock.now += 20.0  # and the next one 20 s later
    assert board.rate() == 150.0


def test_rate_follows_a_change_when_renders_are_frequent() -> None:
    clock = Clock()
    board = Dashboard(Settings(), clock=clock)
    for _ in range(40):  # 10 s at 50/s, rendered every 0.25 s
        decisions(board, 12)
        clock.now += 0.25
        board.rate()
    for _ in range(40):  # then 10 s at 200/s: the rate is the recent one, not the average
        decisions(board, 50)
        clock.now += 0.25
        rate = board.rate()
    assert 190 <= rate <= 210
    clock.now += 30.0  # nothing for 30 s, then a render: the rate fell to 0
    assert board.rate() == 0.0


def test_rate_is_unknown_until_there_are_two_samples() -> None:
    clock = Clock()
    rate = Rate(clock)
    assert rate.per_second() is None
    rate.observe(700_000)  # the input topics' end offsets when the view starts
    assert rate.per_second() is None
    clock.now += 2.0
    rate.observe(700_600)
    assert rate.per_second() == 300.0


def test_input_rate_and_lag_are_shown_beside_the_decisions() -> None:
    clock = Clock()
    board = Dashboard(Settings(), clock=clock)
    shown = text(board)
    assert "input - records/s" in shown
    assert "lag reading..." in shown
    board.offsets(700_000, 5_000)
    clock.now += 2.0
    board.offsets(700_610, 4_100)
    shown = text(board)
    assert "input 305 records/s" in shown
    assert "lag 4,100 records" in shown
    board.offsets_error = "unknown (KafkaConnectionError)"
    board.lag = None
    assert "lag unknown (KafkaConnectionError)" in text(board)


def test_backlog_counts_uncommitted_records_of_inputs_and_stages_not_changelogs() -> None:
    m0, m1 = TopicPartition("parcels.manifest", 0), TopicPartition("parcels.manifest", 1)
    stage = TopicPartition("parcel-risk-by-shipper", 0)
    changelog = TopicPartition("parcel-risk-bills-changelog", 0)
    end = {m0: 1000, m1: 500, stage: 300, changelog: 9999}
    start = {m0: 0, m1: 100}
    # m1 never committed: counted from its first record (the worker reads from earliest)
    committed = {m0: 900, stage: 250, changelog: 0}
    assert backlog([m0, m1], committed, end, start) == 100 + 400 + 50
    # -1 is Kafka's "no offset": the same as never committed
    assert backlog([m0, m1], {**committed, m0: -1}, end, start) == 1000 + 400 + 50
    # a partition whose end is unknown gives no figure rather than a guess
    assert backlog([m0], {m0: 10}, {}, {}) == 0


def test_a_dead_child_is_named_with_its_exit_and_the_last_lines_of_its_log(
    tmp_path: Path,
) -> None:
    log = tmp_path / "worker.log"
    log.write_text("an older run's line\n")
    code = "import sys; print('starting'); print('Traceback: DuplicateTimeseries'); sys.exit(3)"
    child = spawn("worker", [sys.executable, "-c", code], log, tmp_path)
    try:
        child.proc.wait(30)
    except subprocess.TimeoutExpired:
        child.proc.kill()
        raise
    board = Dashboard(Settings(), children=[child])
    board.failed = child
    shown = text(board)
    assert f"worker (pid {child.pid}) exited with code 3" in shown
    assert f"worker pid {child.pid} exited with code 3" in shown  # its state in the panel
    assert "Traceback: DuplicateTimeseries" in shown
    assert "an older run's line" not in shown  # only what this run wrote


def test_a_finite_feed_that_finishes_is_not_a_failure(tmp_path: Path) -> None:
    feed = spawn(
        "feed", [sys.executable, "-c", "pass"], tmp_path / "feed.log", tmp_path, may_finish=True
    )
    worker = spawn("worker", [sys.executable, "-c", "pass"], tmp_path / "w.log", tmp_path)
    feed.proc.wait(30)
    worker.proc.wait(30)
    assert feed.failure() is None and feed.finished
    assert worker.failure() == f"worker (pid {worker.pid}) exited with code 0"
    assert "feed pid" in text(Dashboard(Settings(), children=[feed]))
    assert "finished" in text(Dashboard(Settings(), children=[feed]))
