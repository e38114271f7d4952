"""The goals a benchmark checks. Each figure must be present (a missing figure is a
miss, never a 0 that happens to meet a goal) and meet its goal; `finish()` prints every
miss and exits 1 if there was one, so that a benchmark cannot report a miss as a run."""

import sys


class Goals:
    def __init__(self, name: str):
        self.name, self.misses, self.met = name, [], []

    def _check(self, what: str, value, ok, goal: str) -> None:
        if value is None:
            self.misses.append(f"{what}: missing")
        elif ok(value):
            self.met.append(f"{what} = {value} ({goal})")
        else:
            self.misses.append(f"{what} = {value}, goal {goal}")

    def at_most(self, what: str, value, goal) -> None:
        self._check(what, value, lambda v: v <= goal, f"<= {goal}")

    def at_least(self, what: str, value, goal) -> None:
        self._check(what, value, lambda v: v >= goal, f">= {goal}")

    def equal(self, what: str, value, expected) -> None:
        self._check(what, value, lambda v: v == expected, f"== {expected}")

    def finish(self) -> None:
        for m in self.met:
            print(f"goal met: {m}")
        for m in self.misses:
            print(f"GOAL MISSED: {m}", file=sys.stderr)
        if self.misses:
            sys.exit(f"{self.name}: {len(self.misses)} goal(s) missed")
        print(f"{self.name}: every goal met")
