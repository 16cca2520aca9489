"""Label policy for duplicate images, splits by content group, and split-conformal helpers.

Every split in this project goes through `group_kfold` (by pixel-content group), never by file:
CP-AnemiC holds many pixel-identical copies, and a file-level split leaks the same picture into
train and test. `file_kfold` exists only so the report can show how much that leak inflates
the published kind of number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .cpanemic import Sample, groups_of

# Two Hb readings of one child on one day (HemoCue, capillary) rarely differ by more than
# ~1.5 g/dL; a group of identical photos whose readings spread further cannot be one child's
# measurement, so its true label is unknown and the group is dropped (see MODEL_CARD.md).
MAX_GROUP_SPREAD = 2.0
# Standardised colour-feature distance below which two cut-outs were judged the same photo by
# eye (cut out with different masks); see near_duplicate_groups.
NEAR_DUPLICATE_RADIUS = 0.6


@dataclass
class Item:
    """One training/evaluation unit: a distinct image with its policy label."""

    sample: Sample  # the representative file (first by name)
    hb: float  # label under the policy (group mean)
    group_id: str
    n_files: int
    spread: float  # max - min Hb of the group's files
    file_hbs: list[float] = field(default_factory=list)


def apply_label_policy(
    samples: list[Sample], max_spread: float | None = None
) -> tuple[list[Item], dict[str, int]]:
    """One item per content group labelled with the group's mean Hb (the shipped policy keeps
    every group: max_spread=None). With `max_spread`, groups whose Hb spread exceeds it are
    dropped (the alternative the report compares). Returns the items and counts."""
    items, dropped_groups, dropped_files = [], 0, 0
    for gid, members in sorted(groups_of(samples).items()):
        members = sorted(members, key=lambda s: s.image_id)
        hbs = [s.hb for s in members]
        spread = max(hbs) - min(hbs)
        if max_spread is not None and spread > max_spread:
            dropped_groups += 1
            dropped_files += len(members)
            continue
        items.append(Item(members[0], float(np.mean(hbs)), gid, len(members), spread, hbs))
    stats = {
        "files": len(samples),
        "groups": len(groups_of(samples)),
        "duplicate_groups": sum(len(v) > 1 for v in groups_of(samples).values()),
        "dropped_groups": dropped_groups,
        "dropped_files": dropped_files,
        "items": len(items),
    }
    return items, stats


def group_kfold(groups: list[str], n_splits: int = 5, seed: int = 0) -> list[np.ndarray]:
    """Fold index (0..n_splits-1) per element, equal for equal groups; shuffled by `seed`.

    Returns a list of test-index arrays. Groups are dealt round-robin after a seeded shuffle,
    largest first, so folds stay balanced in files as well as in groups.
    """
    uniq: dict[str, int] = {}
    for g in groups:
        uniq[g] = uniq.get(g, 0) + 1
    rng = np.random.default_rng(seed)
    names = sorted(uniq)
    rng.shuffle(names)
    names.sort(key=lambda g: -uniq[g])  # stable: shuffled order within equal sizes
    load = [0] * n_splits
    fold_of: dict[str, int] = {}
    for g in names:
        k = int(np.argmin(load))
        fold_of[g] = k
        load[k] += uniq[g]
    fold = np.array([fold_of[g] for g in groups])
    return [np.flatnonzero(fold == k) for k in range(n_splits)]


def file_kfold(n: int, n_splits: int = 5, seed: int = 0) -> list[np.ndarray]:
    """LEAKY file-level split, for the report's leakage comparison only."""
    return group_kfold([str(i) for i in range(n)], n_splits, seed)


def assert_group_disjoint(groups: list[str], folds: list[np.ndarray]) -> None:
    """Fail if any content group has files in two folds."""
    seen: dict[str, int] = {}
    for k, idx in enumerate(folds):
        for i in idx:
            if seen.setdefault(groups[i], k) != k:
                raise AssertionError(f"group {groups[i]} is in folds {seen[groups[i]]} and {k}")


def conformal_quantile(abs_residuals: np.ndarray, level: float) -> float:
    """Split-conformal half-width: the ceil((n+1)·level)-th smallest absolute residual."""
    r = np.sort(np.abs(np.asarray(abs_residuals, dtype=float)))
    n = r.size
    if n == 0:
        raise ValueError("no residuals")
    k = math.ceil((n + 1) * level)
    return float(r[min(k, n) - 1])


def cross_conformal_coverage(
    y: np.ndarray, pred: np.ndarray, folds: list[np.ndarray], level: float
) -> tuple[float, np.ndarray]:
    """Honest coverage of out-of-fold intervals: each fold's half-width comes from the other
    folds' residuals only. Returns (coverage, per-item half-widths)."""
    res = np.abs(np.asarray(y) - np.asarray(pred))
    q = np.zeros_like(res)
    for idx in folds:
        others = np.setdiff1d(np.arange(res.size), idx)
        q[idx] = conformal_quantile(res[others], level)
    return float(np.mean(res <= q)), q


def near_duplicate_groups(
    features: np.ndarray, groups: list[str], radius: float = NEAR_DUPLICATE_RADIUS
) -> list[str]:
    """Stricter groups for a leak check: content groups whose standardised colour features lie
    within `radius` of each other are merged (connected components). CP-AnemiC holds the same
    photo cut out with different masks, which exact pixel hashing cannot see."""
    from scipy.sparse.csgraph import connected_components

    z = (features - features.mean(axis=0)) / (features.std(axis=0) + 1e-9)
    d = np.sqrt(((z[:, None] - z[None]) ** 2).sum(-1))
    same = d < radius
    uniq = {g: i for i, g in enumerate(dict.fromkeys(groups))}
    gi = np.array([uniq[g] for g in groups])
    same |= gi[:, None] == gi[None]
    _, label = connected_components(same, directed=False)
    return [f"nd{label[i]}" for i in range(len(groups))]
