"""Preferred-allocation helpers: pack devices onto as few groups as possible, or spread them.

Used by the default :meth:`Allocator.preferred` (NUMA packing) and by plugins with richer
topology (PCI bridges under a NUMA node, PFs of SR-IOV VFs). Every helper honours
``must_include``, answers only with IDs from the request and returns exactly ``size`` IDs when
enough are available.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

from ._api import PreferredRequest
from ._model import Device, natural_key

__all__ = ["KeyFn", "prefer_nested", "prefer_packed"]

#: Maps a device to its group at one topology level; ``None`` means "unknown" (used last).
KeyFn = Callable[[Device], Hashable]


def _by_id(device: Device) -> tuple[object, ...]:
    return natural_key(device.id)


def _group(
    devices: Sequence[Device], key: KeyFn
) -> tuple[dict[Hashable, list[Device]], list[Device]]:
    groups: dict[Hashable, list[Device]] = {}
    unknown: list[Device] = []
    for device in devices:
        k = key(device)
        if k is None:
            unknown.append(device)
        else:
            groups.setdefault(k, []).append(device)
    return groups, unknown


def _spread(
    pool: Sequence[Device], need: int, key: KeyFn, anchors: Sequence[Device]
) -> list[Device]:
    groups, unknown = _group(pool, key)
    if unknown:
        groups[("\0unknown",)] = unknown
    used = {k: sum(1 for a in anchors if key(a) == k) for k in groups}
    queues = {k: sorted(v, key=_by_id) for k, v in groups.items()}
    picked: list[Device] = []
    while len(picked) < need and any(queues.values()):
        k = min(
            (k for k, q in queues.items() if q),
            key=lambda k: (used[k], -len(queues[k]), natural_key(str(k))),
        )
        picked.append(queues[k].pop(0))
        used[k] += 1
    return picked


def _pick(
    pool: Sequence[Device],
    need: int,
    levels: Sequence[KeyFn],
    spread: KeyFn | None,
    anchors: Sequence[Device],
) -> list[Device]:
    if need <= 0:
        return []
    if len(pool) <= need:
        return list(pool)
    if not levels:
        if spread is not None:
            return _spread(pool, need, spread, anchors)
        return sorted(pool, key=_by_id)[:need]
    key, rest = levels[0], levels[1:]
    groups, unknown = _group(pool, key)
    anchored = {key(a) for a in anchors}

    def rank(item: tuple[Hashable, list[Device]]) -> tuple[object, ...]:
        k, members = item
        return (k not in anchored, len(members), natural_key(str(k)))

    picked: list[Device] = []
    remaining = sorted(groups.items(), key=rank)
    # Groups that already hold a must-include device cost nothing extra: one that fits takes
    # the whole request; otherwise they are used up first.
    for item in [it for it in remaining if it[0] in anchored]:
        if len(item[1]) >= need:
            return _pick(item[1], need, rest, spread, anchors)
        remaining.remove(item)
        picked += item[1]
        need -= len(item[1])
    while need > 0 and remaining:
        fitting = [item for item in remaining if len(item[1]) >= need]
        if fitting:
            _, members = fitting[0]  # the smallest group that fits
            picked += _pick(members, need, rest, spread, anchors)
            return picked
        # Nothing fits: take the largest group whole and continue.
        largest = min(remaining, key=lambda it: (-len(it[1]), natural_key(str(it[0]))))
        remaining.remove(largest)
        picked += largest[1]
        need -= len(largest[1])
    if need > 0 and unknown:
        picked += _pick(unknown, need, rest, spread, anchors)
    return picked


def prefer_packed(
    request: PreferredRequest,
    levels: Sequence[KeyFn],
    *,
    spread: KeyFn | None = None,
) -> list[str]:
    """Choose ``request.size`` devices packed into the fewest groups, level by level.

    ``levels`` are grouping keys from the outermost (NUMA node) inwards (PCI switch, bridge...).
    At each level the devices go to one group when one can hold them (preferring groups that
    already hold a must-include device, then the smallest that fits, leaving big groups for big
    requests); otherwise to the largest groups first. ``spread``, if given, distributes the
    picks inside the innermost group round-robin over its key (e.g. one VF per PF).
    The result starts with ``must_include`` in request order, then the picks in natural order.
    """
    must_ids = list(dict.fromkeys(d.id for d in request.must_include))
    if request.size <= len(must_ids):
        return must_ids
    taken = set(must_ids)
    pool = [d for d in request.available if d.id not in taken]
    pool = list({d.id: d for d in pool}.values())
    picks = _pick(pool, request.size - len(must_ids), levels, spread, request.must_include)
    return must_ids + [d.id for d in sorted(picks, key=_by_id)]


def _score(devices: Sequence[Device], levels: Sequence[KeyFn]) -> tuple[int, ...]:
    return tuple(len({level(d) for d in devices}) for level in levels)


def prefer_nested(request: PreferredRequest, levels: Sequence[KeyFn]) -> list[str]:
    """Preferred IDs packed level by level, honouring must-include.

    Candidates: :func:`prefer_packed` over everything, and :func:`prefer_packed` restricted to
    each group (at any level) that can hold the whole request. The winner uses the fewest
    groups at the outermost level, then the next level, and so on (ties: the first candidate,
    the unrestricted one first). So 4 devices go to one switch in another NUMA node rather
    than to two switches in a smaller node, which a greedy "smallest group that fits" misses.
    """
    by_id = {d.id: d for d in (*request.available, *request.must_include)}
    must = [d for d in request.must_include if d.id in by_id]
    best = prefer_packed(request, levels)
    if len(must) >= request.size:
        return best
    best_score = _score([by_id[i] for i in best if i in by_id], levels)
    if all(n <= 1 for n in best_score):
        return best  # already one group at every level
    pool = list(request.available)
    seen: set[tuple[int, Hashable]] = set()
    for depth, level in enumerate(levels):
        groups: dict[Hashable, list[Device]] = {}
        for device in pool:
            key = level(device)
            if key is not None:
                groups.setdefault(key, []).append(device)
        for key in sorted(groups, key=str):
            members = groups[key]
            extra = [d for d in must if d not in members]
            if len(members) + len(extra) < request.size or (depth, key) in seen:
                continue
            seen.add((depth, key))
            sub = PreferredRequest(request.resource, tuple(members), tuple(must), request.size)
            picked = prefer_packed(sub, levels)
            if len(picked) != len(best):
                continue
            score = _score([by_id[i] for i in picked], levels)
            if score < best_score:
                best, best_score = picked, score
    return best
