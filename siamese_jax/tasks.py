"""Evaluation tasks as index arrays: N-way K-shot trials and verification pairs."""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import numpy as np

from siamese_jax.errors import DataError


@dataclasses.dataclass(frozen=True)
class Trials:
    """One-shot (or K-shot) trials over some image array: pick the support class matching the query."""

    support: np.ndarray  # int32 [T, N, K] image ids, N classes with K examples each
    query: np.ndarray  # int32 [T]
    answer: np.ndarray  # int32 [T]: the query's class among the N
    group: np.ndarray  # int32 [T]: e.g. the run a trial belongs to

    def image_ids(self) -> list[np.ndarray]:
        """The image id arrays the trials use."""
        return [self.support, self.query]

    def renumbered(self, local) -> "Trials":
        """The same trials with every image id mapped through `local` (e.g. to positions among encoded images)."""
        return dataclasses.replace(self, support=local(self.support), query=local(self.query))


@dataclasses.dataclass(frozen=True)
class Pairs:
    """Verification pairs: is left[i] the same class as right[i]?"""

    left: np.ndarray  # int32 [P]
    right: np.ndarray  # int32 [P]
    same: np.ndarray  # bool [P]

    def image_ids(self) -> list[np.ndarray]:
        """The image id arrays the pairs use."""
        return [self.left, self.right]

    def renumbered(self, local) -> "Pairs":
        """The same pairs with every image id mapped through `local` (e.g. to positions among encoded images)."""
        return dataclasses.replace(self, left=local(self.left), right=local(self.right))


def _by_class(indices: np.ndarray, group: np.ndarray, label: np.ndarray):
    """Maps group -> sorted classes, and class -> its image ids, for the selected images."""
    classes_of = defaultdict(set)
    images_of = defaultdict(list)
    for i in indices:
        classes_of[int(group[i])].add(int(label[i]))
        images_of[int(label[i])].append(int(i))
    return {a: sorted(c) for a, c in classes_of.items()}, images_of


def random_trials(
    indices: np.ndarray, group: np.ndarray, label: np.ndarray, way: int, shots: int, count: int, seed: int
) -> Trials:
    """`count` random within-group `way`-way `shots`-shot trials drawn from the selected images.

    Each trial picks a group (an alphabet) with at least `way` classes, `way` of its classes, and for each
    class `shots` support images; the query is another image of one of them.
    """
    rng = np.random.default_rng(seed)
    classes_of, images_of = _by_class(indices, group, label)
    eligible = [a for a, classes in classes_of.items() if len(classes) >= way]
    if not eligible:
        raise DataError(f"no group (alphabet) in this split has {way} classes for {way}-way trials")
    too_few = [c for a in eligible for c in classes_of[a] if len(images_of[c]) < shots + 1]
    if too_few:
        raise DataError(f"{shots}-shot trials need {shots + 1} images per class; some classes have fewer")
    support = np.empty((count, way, shots), np.int32)
    query = np.empty(count, np.int32)
    answer = rng.integers(0, way, count).astype(np.int32)
    trial_group = np.empty(count, np.int32)
    for t in range(count):
        trial_group[t] = eligible[rng.integers(len(eligible))]
        chosen = rng.choice(classes_of[trial_group[t]], way, replace=False)
        for n, c in enumerate(chosen):
            picks = rng.choice(images_of[c], shots + (n == answer[t]), replace=False)
            support[t, n] = picks[:shots]
            if n == answer[t]:
                query[t] = picks[shots]
    return Trials(support, query, answer, trial_group)


def random_pairs(indices: np.ndarray, group: np.ndarray, label: np.ndarray, count: int, seed: int,
                 within_group: bool = True) -> Pairs:
    """`count` verification pairs, half of one class (two images), half of two classes of one group (alphabet).

    Same pairs come from classes with two or more images; a class with one image only appears in
    different pairs. With `within_group` False, a different pair's two classes are drawn from the
    whole split, so they mostly come from two groups: an easier test, likely the paper's Table 1.
    """
    rng = np.random.default_rng(seed)
    classes_of, images_of = _by_class(indices, group, label)
    groups = [g for g, classes in classes_of.items() if len(classes) >= 2]
    pairable = {g: [c for c in classes if len(images_of[c]) >= 2] for g, classes in classes_of.items()}
    same_groups = [g for g in groups if pairable[g]]
    if not groups:
        raise DataError("verification pairs need a group with two or more classes; this split has none")
    if not same_groups:
        raise DataError("verification pairs need classes with two or more images; every class of this split has "
                        "one (a class folder with a single image cannot form a same pair)")
    every_class = sorted(images_of)
    left, right = np.empty(count, np.int32), np.empty(count, np.int32)
    same = np.arange(count) < count // 2
    for p in range(count):
        if same[p]:
            classes = pairable[same_groups[rng.integers(len(same_groups))]]
            left[p], right[p] = rng.choice(images_of[classes[rng.integers(len(classes))]], 2, replace=False)
        else:
            classes = classes_of[groups[rng.integers(len(groups))]] if within_group else every_class
            c1, c2 = rng.choice(classes, 2, replace=False)
            left[p], right[p] = rng.choice(images_of[c1]), rng.choice(images_of[c2])
    return Pairs(left, right, same)
