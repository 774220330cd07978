"""Which frames a run keeps: every Nth, N per second of video time, a window, a count.

The rules, so that a user (and a test) can say in advance which frames are kept:
- `start`/`end` (files): frames with start ≤ time < end; `duration` ends the window `duration`
  seconds after its first frame (for a live source, of arrival time);
- `every N`: the 1st, (N+1)th, (2N+1)th ... frame of the window;
- `fps F`: the first frame at or after each multiple of 1/F seconds from the window's first frame;
- `max_frames`: stop after that many kept frames.
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass
from typing import Any

from ..bounds import DURATION, END, EVERY, FPS, MAX_FRAMES, START, check_bounds
from ..errors import ConfigError

EPSILON = 1e-6  # seconds: a timestamp a rounding away from a boundary counts as on it
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|h|m|s)")
_CLOCK = re.compile(r"^(?:(\d+):)?(\d+):(\d+(?:\.\d*)?)$")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str, flag: str) -> float:
    """Seconds from '90', '2.5', '90s', '10m', '1h30m', '500ms' or '1:30' / '01:02:03.5'."""
    value = text.strip().lower()
    with contextlib.suppress(ValueError):
        return float(value)  # nan and inf are refused by the option's bound
    if (clock := _CLOCK.match(value)) is not None:
        hours, minutes, seconds = clock.groups()
        return int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)
    position, total = 0, 0.0
    for match in _PART.finditer(value):
        if match.start() != position:
            break
        total += float(match[1]) * _UNITS[match[2]]
        position = match.end()
    if position == 0 or position != len(value):
        raise ConfigError(
            f"Invalid {flag} {text!r}: not a duration",
            "Give seconds (90, 2.5), units (90s, 10m, 1h30m, 500ms) or a clock time (1:30, 01:02:03.5)",
        )
    return total


@dataclass(frozen=True)
class Sampling:
    """What a run keeps of each source (module docstring); None: not limited."""

    every: int = 1
    fps: float | None = None
    max_frames: int | None = None
    duration: float | None = None
    start: float | None = None
    end: float | None = None

    def __post_init__(self) -> None:
        check_bounds(
            {
                "every": EVERY,
                "fps": FPS,
                "max_frames": MAX_FRAMES,
                "duration": DURATION,
                "start": START,
                "end": END,
            },
            vars(self),
        )
        if self.every != 1 and self.fps is not None:
            raise ConfigError("--every and --fps both choose frames", "Pass one of them")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ConfigError(
                f"--end {self.end:g} is not after --start {self.start:g}", "Give an --end later than --start"
            )

    @property
    def windowed(self) -> bool:
        """True when --start or --end is given (files only: a live source has no timeline to seek)."""
        return self.start is not None or self.end is not None

    def to_dict(self) -> dict[str, float | int | None]:
        return dict(vars(self))

    def selection(self) -> dict[str, float | int | None]:
        """The fields that decide WHICH frames are kept (every, fps, start, end): a run resumes or
        extends a folder only with the same ones. --max-frames and --duration only bound a run (a
        live source's next run, appended to the folder, takes its own)."""
        return {"every": self.every, "fps": self.fps, "start": self.start, "end": self.end}

    def expected(self, count: int | None, rate: float | None) -> int | None:
        """How many of a file's `count` frames at `rate` frames/s this sampling keeps, for a
        progress bar's total (None: the container does not say)."""
        if not count:
            return None
        length = count / rate if rate else None
        if rate and length is not None:
            begin = self.start or 0.0
            stop = min(length, self.end or length, begin + (self.duration or length))
            length = max(0.0, stop - begin)
            count = min(count, round(length * rate))
        if self.fps is not None:
            if length is None:
                return None
            kept = min(count, math.ceil(length * self.fps))  # never more than one per frame
        else:
            kept = math.ceil(count / self.every)
        return min(kept, self.max_frames) if self.max_frames else kept

    def sampler(self) -> Sampler:
        """A fresh decision state for one source."""
        return Sampler(self)


class Sampler:
    """Decides, frame by frame in decoding order, whether one source's frame is kept."""

    def __init__(self, sampling: Sampling) -> None:
        self.sampling = sampling
        self.first: float | None = None  # time of the window's first frame
        self.seen = 0  # frames inside the window so far
        self.kept = 0
        self.due = -math.inf  # --fps: the next time a frame is due
        self.finished = False

    def keep(self, time: float) -> bool:
        """True when the frame at `time` is kept; sets `finished` once no later frame can be."""
        s = self.sampling
        if self.finished:
            return False
        if s.start is not None and time < s.start - EPSILON:
            return False
        if s.end is not None and time >= s.end - EPSILON:
            self.finished = True
            return False
        if self.first is None:
            self.first = time
            self.due = time
        if s.duration is not None and time - self.first >= s.duration - EPSILON:
            self.finished = True
            return False
        position = self.seen
        self.seen += 1
        if s.fps is not None:
            if time < self.due - EPSILON:
                return False
            period = 1.0 / s.fps
            self.due = self.first + (math.floor((time - self.first) / period + EPSILON) + 1) * period
        elif position % s.every:
            return False
        self.kept += 1
        if s.max_frames is not None and self.kept >= s.max_frames:
            self.finished = True
        return True


def describe_change(before: dict[str, Any], now: dict[str, Any]) -> str:
    """`every 10, now every 5`: the sampling flags that differ between two selections
    (`Sampling.selection()`; a key that is missing or None is shown as `no KEY`)."""
    keys = [key for key in {**before, **now} if before.get(key) != now.get(key)]
    return f"{_flags(before, keys)}, now {_flags(now, keys)}"


def _flags(values: dict[str, Any], keys: list[str]) -> str:
    def flag(key: str) -> str:
        value = values.get(key)
        if value is None:
            return f"no {key}"
        return f"{key} {value:g}" if isinstance(value, int | float) else f"{key} {value!r}"

    return ", ".join(map(flag, keys)) or "the same"
