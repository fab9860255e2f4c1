"""When a failed webhook delivery is tried again: exponential waits with jitter, for
at least a horizon (24 hours by default), then the delivery is given up.

The jitter only ever lengthens a wait (by up to `jitter` of it), so the nominal waits
are lower bounds: the schedule keeps retrying until their sum reaches the horizon,
whatever the random draws were.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    base_s: float = 30.0
    factor: float = 2.0
    cap_s: float = 4 * 3600.0
    horizon_s: float = 24 * 3600.0
    jitter: float = 0.5

    def nominal(self, failures: int) -> float:
        """The wait after the `failures`-th failed attempt, before jitter (>= 1)."""
        return min(self.cap_s, self.base_s * self.factor ** min(failures - 1, 64))

    def waited(self, failures: int) -> float:
        """The least time spent waiting between the first attempt and attempt
        `failures + 1` (the sum of the nominal waits so far)."""
        return sum(self.nominal(n) for n in range(1, failures + 1))

    def delay(self, failures: int, draw: float) -> float | None:
        """Seconds until the next attempt after `failures` failed ones, or None when
        the horizon has been covered and the delivery is given up. `draw` is a
        uniform random number in [0, 1) (a seam: tests pass fixed values)."""
        if failures < 1:
            raise ValueError("failures counts failed attempts, from 1")
        if self.waited(failures - 1) >= self.horizon_s:
            return None
        return self.nominal(failures) * (1 + self.jitter * draw)

    def max_attempts(self) -> int:
        """How many attempts a delivery that always fails gets in all."""
        failures = 1
        while self.waited(failures - 1) < self.horizon_s:
            failures += 1
        return failures
