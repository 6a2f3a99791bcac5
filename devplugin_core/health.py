"""Health state with hysteresis, fed by HealthChecker observations."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .api import Observation

__all__ = ["HealthTracker", "Transition"]


@dataclass(frozen=True)
class Transition:
    """A health key changed state."""

    key: str
    healthy: bool
    reason: str


@dataclass
class _KeyState:
    healthy: bool = True
    good_streak: int = 0
    reason: str = ""


class HealthTracker:
    """Unhealthy at the first bad observation, Healthy after ``recover_after`` good ones in a row.

    Keys not reported by a check count as good. Keys that are no longer present are forgotten.
    """

    def __init__(self, recover_after: int = 2) -> None:
        if recover_after < 1:
            raise ValueError("recover_after must be >= 1")
        self.recover_after = recover_after
        self._states: dict[str, _KeyState] = {}

    def is_healthy(self, key: str) -> bool:
        state = self._states.get(key)
        return state is None or state.healthy

    def reason(self, key: str) -> str:
        state = self._states.get(key)
        return state.reason if state else ""

    def unhealthy_keys(self) -> dict[str, str]:
        return {k: s.reason for k, s in self._states.items() if not s.healthy}

    def observe(
        self, observations: Mapping[str, Observation], keys: Iterable[str]
    ) -> list[Transition]:
        """Apply one round of observations for the current ``keys``; return the transitions."""
        current = set(keys)
        for gone in set(self._states) - current:
            del self._states[gone]
        changes: list[Transition] = []
        for key in sorted(current):
            obs = observations.get(key)
            state = self._states.setdefault(key, _KeyState())
            if obs is not None and not obs.healthy:
                state.good_streak = 0
                if state.healthy or state.reason != obs.reason:
                    was_healthy = state.healthy
                    state.healthy = False
                    state.reason = obs.reason
                    if was_healthy:
                        changes.append(Transition(key, False, obs.reason))
                continue
            if not state.healthy:
                state.good_streak += 1
                if state.good_streak >= self.recover_after:
                    state.healthy = True
                    state.good_streak = 0
                    state.reason = ""
                    changes.append(Transition(key, True, "recovered"))
        return changes
