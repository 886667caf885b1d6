"""The progress display: plain lines in a log, a live line on a terminal, and time left of the budget."""

from __future__ import annotations

import io
import math

import pytest

from cinn.progress import Progress, track


class FakeClock:
    """A clock that moves only when told to, so no test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def screen(text: str) -> list[str]:
    """What a terminal shows after ``text``: a carriage return moves back to the line's start, and later
    characters overwrite earlier ones."""
    lines: list[list[str]] = [[]]
    column = 0
    for char in text:
        if char == "\n":
            lines.append([])
            column = 0
        elif char == "\r":
            column = 0
        else:
            line = lines[-1]
            line[column:column + 1] = [char]
            column += 1
    return ["".join(line).rstrip() for line in lines]


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "150")


def steady_updates(bar: Progress, clock: FakeClock, count: int, every_s: float) -> None:
    for _ in range(count):
        clock.now += every_s
        bar.update()


def test_a_log_gets_plain_lines_at_most_every_interval():
    clock, log = FakeClock(), io.StringIO()
    with Progress("glow", total=10_000, unit="steps", stream=log, interval_s=5.0, clock=clock) as bar:
        for _ in range(800):
            clock.now += 0.125
            bar.update(bpd=3.0)
    text = log.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert 2 <= len(lines) <= math.ceil(clock.now / 5.0) + 1
    assert lines[-1] == "glow: 800/10000 steps (8%) | 1:40 elapsed, 19:10 left | 8 steps/s | bpd=3"


def test_a_time_budget_counts_down_the_budget_and_not_the_step_total():
    clock = FakeClock()
    bar = Progress("glow", total=100_000, unit="steps", time_budget_s=600.0, stream=io.StringIO(), clock=clock)
    steady_updates(bar, clock, 600, every_s=0.5)  # 2 steps/s for 5 minutes: 1200 steps when the budget ends
    line = bar.line()
    assert "600 of ~1200 steps | 5:00 elapsed, 5:00 left of 10:00 (50%) | 2 steps/s" in line
    assert "100000" not in line and "13:48:20" not in line  # the total, and the time to reach it at 2 steps/s


def test_a_step_total_nearer_than_the_budget_is_the_one_counted_down():
    clock = FakeClock()
    bar = Progress("glow", total=1000, unit="steps", time_budget_s=3600.0, stream=io.StringIO(), clock=clock)
    steady_updates(bar, clock, 600, every_s=0.5)
    line = bar.line()
    assert "600/1000 steps (60%) | 5:00 elapsed, 3:20 left, within the 1:00:00 budget" in line
    assert "left of" not in line


def test_a_resume_counts_the_time_and_steps_spent_before():
    clock = FakeClock()
    bar = Progress("glow", initial=500, unit="steps", time_budget_s=600.0, elapsed_s=240.0, stream=io.StringIO(),
                   clock=clock)
    steady_updates(bar, clock, 120, every_s=0.5)
    assert "620 of ~1220 steps | 5:00 elapsed, 5:00 left of 10:00 (50%) | 2 steps/s" in bar.line()


def test_a_terminal_gets_a_live_line_that_stays_when_the_loop_ends():
    clock, terminal = FakeClock(), Terminal()
    with Progress("eval", total=10, unit="batches", stream=terminal, clock=clock) as bar:
        for count in range(1, 11):
            clock.now += 0.5
            bar.update(bpd=3.5)
            assert screen(terminal.getvalue()) == [bar.line()]
            assert bar.line().startswith(f"eval: {count}/10 batches ({10 * count}%)")
        drawn = terminal.getvalue().count("\r")
        for _ in range(5):  # faster than the refresh: not redrawn
            clock.now += 0.01
            bar.update(0)
        assert terminal.getvalue().count("\r") == drawn
    text = terminal.getvalue()
    assert text.endswith("\n") and text.count("\n") == 1
    assert screen(text) == ["eval: 10/10 batches (100%) | 0:05 elapsed, 0:00 left | 1.98 batches/s | bpd=3.5", ""]


def test_a_message_goes_above_the_live_line():
    clock, terminal = FakeClock(), Terminal()
    with Progress("glow", unit="steps", stream=terminal, clock=clock) as bar:
        steady_updates(bar, clock, 3, every_s=1.0)
        bar.write("step 3: checkpoint written")
        assert screen(terminal.getvalue()) == ["step 3: checkpoint written",
                                               "glow: 3 steps | 0:03 elapsed | 1 steps/s"]


@pytest.mark.parametrize("stream_type", [Terminal, io.StringIO])
def test_an_exception_closes_the_display_and_the_error_stands_alone(stream_type):
    clock, stream = FakeClock(), stream_type()
    with pytest.raises(RuntimeError), Progress("glow", total=10, stream=stream, clock=clock) as bar:
        steady_updates(bar, clock, 3, every_s=1.0)
        raise RuntimeError("boom")
    stream.write("RuntimeError: boom\n")
    assert screen(stream.getvalue()) == ["RuntimeError: boom", ""]
    written = stream.getvalue()
    steady_updates(bar, clock, 3, every_s=10.0)
    bar.close()
    assert stream.getvalue() == written


@pytest.mark.parametrize("stream_type", [Terminal, io.StringIO])
def test_a_disabled_display_writes_nothing_but_messages(stream_type):
    clock, stream = FakeClock(), stream_type()
    with Progress("glow", total=10, enabled=False, stream=stream, clock=clock) as bar:
        steady_updates(bar, clock, 10, every_s=10.0)
        assert stream.getvalue() == ""
        bar.write("a message")
    assert stream.getvalue() == "a message\n"


def test_track_yields_every_item_and_counts_them():
    clock, log = FakeClock(), io.StringIO()

    def ticking(n: int):
        for item in range(n):
            clock.now += 1.0
            yield item

    assert list(track(ticking(7), "eval", total=7, unit="batches", stream=log, interval_s=60.0,
                      clock=clock)) == list(range(7))
    assert log.getvalue() == "eval: 7/7 batches (100%) | 0:07 elapsed, 0:00 left | 1 batches/s\n"


def test_a_transient_display_leaves_only_its_periodic_lines_in_a_log():
    clock, log = FakeClock(), io.StringIO()
    with Progress("check", total=100, stream=log, interval_s=5.0, leave=False, clock=clock) as bar:
        steady_updates(bar, clock, 4, every_s=1.0)
        assert log.getvalue() == ""
        steady_updates(bar, clock, 4, every_s=1.0)
    assert log.getvalue() == "check: 5/100 it (5%) | 0:05 elapsed, 1:35 left | 1 it/s\n"


def test_track_erases_its_line_when_left_or_abandoned():
    terminal = Terminal()
    assert sum(track(range(4), "eval", stream=terminal, leave=False)) == 6
    batches = track(range(4), "eval", stream=terminal)
    next(batches)
    assert screen(terminal.getvalue())[-1].startswith("eval: 0/4 it (0%)")
    batches.close()
    assert screen(terminal.getvalue()) == [""]
