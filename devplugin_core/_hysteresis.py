"""Health state with hysteresis, fed by HealthChecker observations (owned by the event loop)."""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass

from ._api import Observation

__all__ = ["HealthTracker", "Transition"]


@dataclass(frozen=True)
class Transition:
    """A health key changed state."""

    key: str
    healthy: bool
    reason: str


@dataclass
class _Sick:
    reason: str
    good_streak: int = 0


class HealthTracker:
    """Unhealthy at the first bad observation, Healthy after ``recover_after`` good ones in a row.

    Keys not reported by a check count as good. Only unhealthy keys are stored, so a round costs
    O(bad + unhealthy) however many devices a resource has; keys that are no longer present are
    forgotten.
    """

    def __init__(self, recover_after: int = 2) -> None:
        if recover_after < 1:
            raise ValueError("recover_after must be >= 1")
        self.recover_after = recover_after
        self._sick: dict[str, _Sick] = {}

    def is_healthy(self, key: str) -> bool:
        return key not in self._sick

    @property
    def all_healthy(self) -> bool:
        """No key is unhealthy or recovering."""
        return not self._sick

    def reason(self, key: str) -> str:
        sick = self._sick.get(key)
        return sick.reason if sick else ""

    def unhealthy_keys(self) -> dict[str, str]:
        return {k: s.reason for k, s in self._sick.items()}

    def forget(self, keys: Set[str]) -> None:
        """Drop the state of keys that are no longer present (not a health round)."""
        for key in [k for k in self._sick if k not in keys]:
            del self._sick[key]

    def observe(self, observations: Mapping[str, Observation], keys: Set[str]) -> list[Transition]:
        """Apply one round of observations for the current ``keys``; return the transitions."""
        changes: list[Transition] = []
        for key, obs in observations.items():
            if obs.healthy or key not in keys:
                continue
            sick = self._sick.get(key)
            if sick is None:
                self._sick[key] = _Sick(obs.reason)
                changes.append(Transition(key, False, obs.reason))
            else:
                sick.reason = obs.reason
                sick.good_streak = 0
        for key in sorted(self._sick):
            if key not in keys:
                del self._sick[key]
                continue
            seen = observations.get(key)
            if seen is not None and not seen.healthy:
                continue
            sick = self._sick[key]
            sick.good_streak += 1
            if sick.good_streak >= self.recover_after:
                del self._sick[key]
                changes.append(Transition(key, True, "recovered"))
        changes.sort(key=lambda t: t.key)
        return changes
