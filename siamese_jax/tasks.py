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


@dataclasses.dataclass(frozen=True)
class Pairs:
    """Verification pairs: is left[i] the same class as right[i]?"""

    left: np.ndarray  # int32 [P]
    right: np.ndarray  # int32 [P]
    same: np.ndarray  # bool [P]


def _by_class(indices: np.ndarray, alphabet: np.ndarray, label: np.ndarray):
    """Maps alphabet -> sorted classes, and class -> its image ids, for the selected images."""
    classes_of = defaultdict(set)
    images_of = defaultdict(list)
    for i in indices:
        classes_of[int(alphabet[i])].add(int(label[i]))
        images_of[int(label[i])].append(int(i))
    return {a: sorted(c) for a, c in classes_of.items()}, images_of


def random_trials(
    indices: np.ndarray, alphabet: np.ndarray, label: np.ndarray, way: int, shots: int, count: int, seed: int
) -> Trials:
    """`count` random within-alphabet `way`-way `shots`-shot trials drawn from the selected images.

    Each trial picks an alphabet with at least `way` classes, `way` of its classes, and for each
    class `shots` support images; the query is another image of one of them.
    """
    rng = np.random.default_rng(seed)
    classes_of, images_of = _by_class(indices, alphabet, label)
    eligible = [a for a, classes in classes_of.items() if len(classes) >= way]
    if not eligible:
        raise DataError(f"no alphabet in this split has {way} classes for {way}-way trials")
    too_few = [c for a in eligible for c in classes_of[a] if len(images_of[c]) < shots + 1]
    if too_few:
        raise DataError(f"{shots}-shot trials need {shots + 1} images per class; some classes have fewer")
    support = np.empty((count, way, shots), np.int32)
    query = np.empty(count, np.int32)
    answer = rng.integers(0, way, count).astype(np.int32)
    group = np.empty(count, np.int32)
    for t in range(count):
        group[t] = eligible[rng.integers(len(eligible))]
        chosen = rng.choice(classes_of[group[t]], way, replace=False)
        for n, c in enumerate(chosen):
            picks = rng.choice(images_of[c], shots + (n == answer[t]), replace=False)
            support[t, n] = picks[:shots]
            if n == answer[t]:
                query[t] = picks[shots]
    return Trials(support, query, answer, group)


def random_pairs(indices: np.ndarray, alphabet: np.ndarray, label: np.ndarray, count: int, seed: int) -> Pairs:
    """`count` verification pairs, half of one class (two images), half of two classes of one alphabet.

    Same pairs come from classes with two or more images; a class with one image only appears in
    different pairs.
    """
    rng = np.random.default_rng(seed)
    classes_of, images_of = _by_class(indices, alphabet, label)
    alphabets = [a for a, classes in classes_of.items() if len(classes) >= 2]
    pairable = {a: [c for c in classes if len(images_of[c]) >= 2] for a, classes in classes_of.items()}
    same_alphabets = [a for a in alphabets if pairable[a]]
    if not alphabets:
        raise DataError("verification pairs need a group with two or more classes; this split has none")
    if not same_alphabets:
        raise DataError("verification pairs need classes with two or more images; every class of this split has "
                        "one (a class folder with a single image cannot form a same pair)")
    left, right = np.empty(count, np.int32), np.empty(count, np.int32)
    same = np.arange(count) < count // 2
    for p in range(count):
        if same[p]:
            classes = pairable[same_alphabets[rng.integers(len(same_alphabets))]]
            left[p], right[p] = rng.choice(images_of[classes[rng.integers(len(classes))]], 2, replace=False)
        else:
            classes = classes_of[alphabets[rng.integers(len(alphabets))]]
            c1, c2 = rng.choice(classes, 2, replace=False)
            left[p], right[p] = rng.choice(images_of[c1]), rng.choice(images_of[c2])
    return Pairs(left, right, same)
