"""The one progress display of every loop in cinn: a live line on a terminal, a plain line every few
seconds in a log file or a pipe, and time left measured against the time budget when there is one.

A run bounded by both a step total and a time budget ends at whichever bound comes first, so the display
estimates the steps reachable in the remaining time from the measured rate and counts down to the nearer
bound: it never shows an end that the other bound will cut short.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import TextIO, TypeVar

Item = TypeVar("Item")

TERMINAL_REFRESH_S = 0.1  # a terminal line is redrawn at most this often; more is flicker, not information


class Progress:
    """A progress display for a loop of ``total`` steps (or an open-ended one), optionally bounded by a
    time budget, used as a context manager around the loop.

    On a terminal (``stream.isatty()``) it is one live line, redrawn at most every 0.1 s; when the loop
    ends it stays on screen (``leave=True``) or is erased. When the stream is a file or a pipe it writes one
    plain line at most every ``interval_s`` seconds, never a carriage return, and a last one when the loop
    ends if ``leave`` (a transient display, such as an evaluation inside a command, leaves no summary in
    the log). When the block raises, a terminal line is erased and no last line is written, so the error
    that follows stands alone.

    The line reads ``description: count | time | rate | stats``. With ``time_budget_s`` the time is that of
    the budget, ``elapsed_s`` (spent before a resume) included: elapsed, left, and the share used. With a
    step ``total`` too, the rate since the first update tells which bound comes first; the percentage and
    the time left are those of the nearer one, and the count reads ``3316 of ~6085 steps`` when the budget
    will end the run before the total.

    Args:
        description: what the loop is, shown first (``"glow"``, ``"eval"``).
        total: the step count at which the loop ends, or ``None`` when unknown.
        initial: the count to start from (the step a resumed run starts at).
        unit: what one step is, plural (``"steps"``, ``"batches"``).
        time_budget_s: the run's time budget in seconds, or ``None``.
        elapsed_s: seconds of the budget already spent before this display started (by earlier sessions).
        enabled: ``False`` shows nothing (messages from :meth:`write` still go out).
        leave: whether the last line stays after a loop that ended normally (on a terminal; written to a
            file or a pipe).
        stream: where to write; ``sys.stderr`` by default.
        interval_s: seconds between two lines when the stream is not a terminal.
        clock: seconds on a monotonic clock (a fake one in tests).

    Example:
        >>> import io
        >>> log = io.StringIO()
        >>> clock = iter([0.0, 2.0, 4.0, 8.0]).__next__   # seconds at start, 2 updates and close
        >>> with Progress("glow", total=1000, initial=40, unit="steps", time_budget_s=60.0, elapsed_s=20.0,
        ...               stream=log, clock=clock) as bar:
        ...     bar.update(bpd=3.2104)
        ...     bar.update(bpd=3.208)
        >>> print(log.getvalue(), end="")
        glow: 42 of ~58 steps | 0:28 elapsed, 0:32 left of 1:00 (46%) | 0.5 steps/s | bpd=3.208
    """

    def __init__(self, description: str, *, total: int | None = None, initial: int = 0, unit: str = "it",
                 time_budget_s: float | None = None, elapsed_s: float = 0.0, enabled: bool = True,
                 leave: bool = True, stream: TextIO | None = None, interval_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic):
        if total is not None and total < 0:
            raise ValueError(f"total must be a non-negative step count or None, got {total}")
        if time_budget_s is not None and time_budget_s <= 0:
            raise ValueError(f"time_budget_s must be positive or None, got {time_budget_s}")
        self.description = description
        self.total = total
        self.count = initial
        self.unit = unit
        self.time_budget_s = time_budget_s
        self.enabled = enabled
        self.leave = leave
        self.stream = sys.stderr if stream is None else stream
        self.interval_s = interval_s
        self._elapsed_before = elapsed_s
        self._clock = clock
        self._start = clock()
        self._first_update: tuple[float, int] | None = None  # (time, count): the rate is measured from here
        self._last_update = self._start
        self._stats: dict[str, str] = {}
        self._terminal = enabled and self.stream.isatty()
        self._last_shown = self._start
        self._on_screen = False
        self._closed = False
        if self._terminal:
            self._draw(self._start)

    # ------------------------------------------------------------------------------------ use
    def update(self, n: int = 1, **stats: float | str) -> None:
        """Advance the count by ``n`` and set the ``stats`` shown after the rate (floats to 4 digits;
        pass a string for another format). A stat keeps its value until it is set again."""
        now = self._clock()
        self.count += n
        self._last_update = now
        if self._first_update is None:
            self._first_update = (now, self.count)
        self._stats.update({name: f"{value:.4g}" if isinstance(value, float) else str(value)
                            for name, value in stats.items()})
        if not self.enabled or self._closed:
            return
        if self._terminal:
            if now - self._last_shown >= TERMINAL_REFRESH_S:
                self._draw(now)
        elif now - self._last_shown >= self.interval_s:
            self._write(self.line(now) + "\n")
            self._last_shown = now

    def write(self, message: str, stream: TextIO | None = None) -> None:
        """Print ``message`` on a line of its own to ``stream`` (default: the display's own), above the live
        line on a terminal (which is redrawn below it). Messages are not progress: they are printed even
        when the display is disabled."""
        redraw = self._on_screen
        if redraw:
            self._erase()
        if stream is None:
            self._write(message + "\n")
        else:
            stream.write(message + "\n")
            stream.flush()
        if redraw:
            self._draw(self._clock())

    def close(self) -> None:
        """End the display: its last line stays if ``leave``, else a terminal line is erased. Closing
        twice does nothing."""
        self._close(failed=False)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._close(failed=exc_type is not None)

    # ------------------------------------------------------------------------------------ text
    def line(self, now: float | None = None) -> str:
        """The display's text at time ``now`` (the clock's current time by default), without line ends."""
        now = self._clock() if now is None else now
        elapsed = self._elapsed_before + now - self._start
        rate = self._rate()
        budget = self.time_budget_s
        budget_left = None if budget is None else max(budget - elapsed, 0.0)
        total_left_s = None if self.total is None or rate is None else max(self.total - self.count, 0) / rate
        if budget is not None and (total_left_s is None or budget_left < total_left_s):
            counter = (f"{self.count} {self.unit}" if rate is None
                       else f"{self.count} of ~{self.count + int(rate * budget_left)} {self.unit}")
            timing = (f"{_clock_time(elapsed)} elapsed, {_clock_time(budget_left)} left of "
                      f"{_clock_time(budget)} ({_percent(elapsed / budget)})")
        else:
            counter = f"{self.count} {self.unit}"
            if self.total is not None:
                counter = (f"{self.count}/{self.total} {self.unit} "
                           f"({_percent(self.count / self.total if self.total else 1.0)})")
            timing = f"{_clock_time(elapsed)} elapsed"
            if total_left_s is not None:
                timing += f", {_clock_time(total_left_s)} left"
            if budget is not None:
                timing += f", within the {_clock_time(budget)} budget"
        parts = [f"{self.description}: {counter}", timing]
        if rate is not None:
            parts.append(f"{rate:.3g} {self.unit}/s" if rate < 1000 else f"{rate:.0f} {self.unit}/s")
        if self._stats:
            parts.append(" ".join(f"{name}={value}" for name, value in self._stats.items()))
        return " | ".join(parts)

    def _rate(self) -> float | None:
        """Steps per second from the first update to the last (which leaves out start-up and compilation)."""
        if self._first_update is None:
            return None
        since, count = self._first_update
        if self._last_update <= since or self.count <= count:
            return None
        return (self.count - count) / (self._last_update - since)

    # ------------------------------------------------------------------------------------ output
    def _close(self, failed: bool) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.enabled:
            return
        now = self._clock()
        if not self._terminal:
            if self.leave and not failed:
                self._write(self.line(now) + "\n")
        elif failed or not self.leave:
            self._erase()
        else:
            self._draw(now)
            self._write("\n")

    def _draw(self, now: float) -> None:
        width = _terminal_width(self.stream) - 1  # the last column would wrap on some terminals
        self._write("\r" + self.line(now)[:width].ljust(width))  # padded: no stale tail of a longer line
        self._last_shown = now
        self._on_screen = True

    def _erase(self) -> None:
        self._write("\r" + " " * (_terminal_width(self.stream) - 1) + "\r")
        self._on_screen = False

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


def track(iterable: Iterable[Item], description: str, *, total: int | None = None, unit: str = "it",
          enabled: bool = True, leave: bool = True, stream: TextIO | None = None, interval_s: float = 5.0,
          clock: Callable[[], float] = time.monotonic) -> Iterator[Item]:
    """The items of ``iterable``, counted on a :class:`Progress` display (``total`` defaults to
    ``len(iterable)`` when it has one). The display closes when the loop ends or raises, or when this
    generator is closed.

    Example:
        >>> import io
        >>> log = io.StringIO()
        >>> clock = iter([0.0, 1.0, 2.0, 3.0, 4.0]).__next__
        >>> sum(track(range(3), "eval", unit="batches", stream=log, clock=clock))
        3
        >>> print(log.getvalue(), end="")
        eval: 3/3 batches (100%) | 0:04 elapsed, 0:00 left | 1 batches/s
    """
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    with Progress(description, total=total, unit=unit, enabled=enabled, leave=leave, stream=stream,
                  interval_s=interval_s, clock=clock) as bar:
        for item in iterable:
            yield item
            bar.update()


def _clock_time(seconds: float) -> str:
    """``m:ss``, or ``h:mm:ss`` from an hour on."""
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def _percent(fraction: float) -> str:
    """Rounded down, so 100% means done."""
    return f"{math.floor(100 * min(max(fraction, 0.0), 1.0))}%"


def _terminal_width(stream: TextIO) -> int:
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):  # not a real terminal (a test's stream, a closed one)
        columns = 0
    return columns if columns > 1 else shutil.get_terminal_size().columns
