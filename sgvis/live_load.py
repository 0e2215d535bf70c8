"""Bounded latency for `sgvis live` on a shared CPU: when frames take longer than the budget, the generator drops to
a lower internal resolution (the synthesis stops at an earlier block, the picture is scaled up), and it climbs back
when there is room again.  On stage a lag of half a second is worse than a softer picture.  And the generator uses
as many threads as the cores other programs leave free (ThreadGovernor, Linux): a generator thread that shares its
core with another program makes every parallel step wait for it.

    governor = LoadGovernor(native=256, budget_ms=70, levels=(128, 64))
    draft = governor.update(work_seconds)      # per frame: None (full resolution) or the draft resolution to use
    governor.message                            # for the HUD while drafting, else ""

Rules: two of the last WINDOW frames over the budget drop one level at once (one slow frame is a hiccup, two are
a load); a level is left upward only after CLIMB_AFTER_S
of frames whose work, times the cost ratio of the level above to this one (measured on the frames either side of the
last move between them, ASSUMED_RATIO before there was one), would fit within CLIMB_SHARE of the budget.
"""
from __future__ import annotations

import os
from collections import deque
from typing import Callable

WINDOW = 8
WARMUP_FRAMES = 5       # the first frames (weight caches, the precision trial) say nothing about the load
CLIMB_AFTER_S = 2.0
CLIMB_SHARE = 0.7
ASSUMED_RATIO = 2.0
EMA = 0.2


def draft_levels(native: int, lowest: int = 64, depth: int = 3) -> tuple[int, ...]:
    """The draft resolutions below `native`, halving at most `depth` times and not below `lowest` (none for a
    model at or below it): a 1024^2 model drafts at 512, 256 and 128, never at a size that loses the picture."""
    out, r = [], native // 2
    while r >= lowest and len(out) < depth:
        out.append(r)
        r //= 2
    return tuple(out)


class LoadGovernor:
    def __init__(self, native: int, budget_ms: float, levels: tuple[int, ...] | None = None):
        self.native = int(native)
        self.levels = (None,) + tuple(levels if levels is not None else draft_levels(native))
        self.budget = float(budget_ms) / 1000.0
        self.index = 0                                   # into self.levels: 0 = full resolution
        self.recent: deque[float] = deque(maxlen=WINDOW)
        self.cost: dict[int, float] = {}                 # level index -> smoothed work per frame (s)
        self.ratios: dict[int, float] = {}               # level index i -> cost of level i - 1 / cost of level i
        self._moved: tuple[float, int] | None = None     # (the last frame's work, the step) right after a move
        self.calm_since: float | None = None
        self.clock = 0.0                                 # seconds of frames seen (sum of their periods)
        self.frames_at = [0] * len(self.levels)          # frames made at each level
        self.changes = 0
        self.warmup = WARMUP_FRAMES

    @property
    def draft(self) -> int | None:
        return self.levels[self.index]

    @property
    def message(self) -> str:
        if self.index == 0:
            return ""
        return f"CPU busy: drawing at {self.draft}^2 (frames over {self.budget * 1000:.0f} ms)"

    def _ratio(self, index: int) -> float:
        """How much more a frame at level index - 1 costs than one at index: measured across the last move
        between the two (the frames either side of it ran under the same load), else assumed."""
        return self.ratios.get(index, ASSUMED_RATIO)

    def update(self, work_s: float, period_s: float | None = None) -> int | None:
        """One frame's work (seconds from pulling its audio to showing it) and its period (start to start;
        defaults to the work) -> the draft resolution for the next frame (None: full)."""
        self.frames_at[self.index] += 1
        if self.warmup > 0:
            self.warmup -= 1
            return self.draft
        if self._moved is not None and work_s > 0:       # the first frame after a move: the cost ratio of the two
            before, step = self._moved
            ratio = before / work_s if step > 0 else work_s / before
            upper = self.index if step > 0 else self.index + 1
            self.ratios[upper] = min(max(ratio, 1.0), 8.0)
        self._moved = None
        self.clock += work_s if period_s is None else max(period_s, work_s)
        c = self.cost.get(self.index)
        self.cost[self.index] = work_s if c is None else c + EMA * (work_s - c)
        self.recent.append(work_s)
        if len(self.levels) == 1:
            return None
        slow = sorted(self.recent)[-2] if len(self.recent) >= 2 else 0.0      # one hiccup is not a load
        if slow > self.budget and self.index < len(self.levels) - 1:
            self._move(+1, work_s)
            return self.draft
        if self.index > 0:
            fits = max(self.recent) * self._ratio(self.index) <= CLIMB_SHARE * self.budget
            if not fits:
                self.calm_since = None
            elif self.calm_since is None:
                self.calm_since = self.clock
            elif self.clock - self.calm_since >= CLIMB_AFTER_S:
                self._move(-1, work_s)
        return self.draft

    def _move(self, step: int, work_s: float) -> None:
        self._moved = (work_s, step) if work_s > 0 else None
        self.index += step
        self.recent.clear()
        self.calm_since = None
        self.changes += 1

    def report(self) -> dict:
        return {"budget_ms": self.budget * 1000, "changes": self.changes,
                "frames_at": {("full" if r is None else f"{r}"): n for r, n in zip(self.levels, self.frames_at)},
                "cost_ms": {("full" if self.levels[i] is None else f"{self.levels[i]}"): round(c * 1000, 2)
                            for i, c in sorted(self.cost.items())}}


# -- generator threads -------------------------------------------------------------------------------------
THREAD_INTERVAL_S = 0.5     # how often the CPU use of other programs is read
THREAD_CLIMB_AFTER_S = 1.5  # a thread is added back only after the cores have been free this long
THREAD_SLACK = 0.3          # a core counts as free while other programs use less than this share of it


def read_cpu_ticks() -> tuple[float, float] | None:
    """(busy clock ticks of the whole machine, ticks of this process) from /proc (Linux), else None."""
    try:
        with open("/proc/stat") as f:
            fields = [float(v) for v in f.readline().split()[1:]]
        with open("/proc/self/stat") as f:
            own = f.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)          # idle + iowait; steal counts as busy
    return sum(fields[:8]) - idle, float(own[11]) + float(own[12])     # utime + stime


class ThreadGovernor:
    """`live.threads: auto` where the machine's CPU use can be read: as many generator threads as the cores other
    programs leave free, from 1 to `max_threads`.  Fewer at once when another program takes a core; one more
    after THREAD_CLIMB_AFTER_S of room.

        governor = ThreadGovernor(max_threads=2)
        threads = governor.update(time.perf_counter())      # per frame; reads /proc every THREAD_INTERVAL_S
    """

    def __init__(self, max_threads: int, cores: int | None = None,
                 reader: Callable[[], tuple[float, float] | None] = read_cpu_ticks, ticks_per_s: float | None = None):
        self.max_threads = max(1, int(max_threads))
        if cores is None:
            from sgvis.backends.tuning import usable_cores
            cores = usable_cores()
        self.cores = int(cores)
        self.reader = reader
        self.hz = float(ticks_per_s or (os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100))
        self.threads = self.max_threads
        self.others = 0.0                     # cores busy with other programs, last reading
        self._last: tuple[float, tuple[float, float]] | None = None
        self._room_since: float | None = None
        self.changes = 0
        self.frames_at: dict[int, int] = {}

    @property
    def available(self) -> bool:
        return self.reader() is not None

    @property
    def message(self) -> str:
        if self.threads >= self.max_threads:
            return ""
        return (f"CPU shared: {self.threads} generator thread{'s' if self.threads > 1 else ''} "
                f"(others use {self.others:.1f} cores)")

    def update(self, now: float) -> int:
        self.frames_at[self.threads] = self.frames_at.get(self.threads, 0) + 1
        if self._last is not None and now - self._last[0] < THREAD_INTERVAL_S:
            return self.threads
        sample = self.reader()
        if sample is None:
            return self.threads
        last, self._last = self._last, (now, sample)
        if last is None or now <= last[0]:
            return self.threads
        seconds = (now - last[0]) * self.hz
        self.others = max(0.0, ((sample[0] - last[1][0]) - (sample[1] - last[1][1])) / seconds)
        want = max(1, min(self.max_threads, int(self.cores - self.others + THREAD_SLACK)))
        if want < self.threads:
            self.threads = want
            self.changes += 1
            self._room_since = None
        elif want > self.threads:
            if self._room_since is None:
                self._room_since = now
            elif now - self._room_since >= THREAD_CLIMB_AFTER_S:
                self.threads += 1
                self.changes += 1
                self._room_since = None
        else:
            self._room_since = None
        return self.threads

    def report(self) -> dict:
        return {"max_threads": self.max_threads, "changes": self.changes,
                "frames_at": {str(k): v for k, v in sorted(self.frames_at.items())},
                "others_cores_last": round(self.others, 2)}
