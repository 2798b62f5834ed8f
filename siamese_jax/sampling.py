"""Training minibatches drawn on the device: which images to encode and which pairs to score."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from siamese_jax.errors import DataError


class SamplingTables(NamedTuple):
    """Padded index tables of a training set; rows are ragged, with their lengths alongside."""

    alphabet_classes: jax.Array  # int32 [A, max classes]: class ids of each alphabet
    alphabet_num_classes: jax.Array  # int32 [A]
    class_images: jax.Array  # int32 [C, max images]: image ids of each class (character)
    class_num_images: jax.Array  # int32 [C]


class Batch(NamedTuple):
    """A minibatch: images to encode, and the pairs (positions in `images`) to score with labels."""

    images: jax.Array  # int32 [M] image ids
    left: jax.Array  # int32 [P]
    right: jax.Array  # int32 [P]
    same: jax.Array  # float32 [P]: 1 for a pair of one class


def _padded(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Stacks ragged int rows into a -1 padded matrix and their lengths."""
    lengths = np.array([len(r) for r in rows], np.int32)
    table = np.full((len(rows), lengths.max()), -1, np.int32)
    for i, row in enumerate(rows):
        table[i, : len(row)] = row
    return table, lengths


def build_tables(alphabet: np.ndarray, label: np.ndarray) -> SamplingTables:
    """Index tables for a set whose image i has `alphabet[i]` and class `label[i]` (any integer ids)."""
    class_ids, class_of_image = np.unique(label, return_inverse=True)
    class_images, class_num_images = _padded([np.flatnonzero(class_of_image == c) for c in range(len(class_ids))])
    if class_num_images.min() < 2:
        raise DataError("every training class needs at least two images to form a same pair")
    alphabet_of_class = np.array([alphabet[label == c][0] for c in class_ids])
    alphabets = np.unique(alphabet_of_class)
    alphabet_classes, alphabet_num_classes = _padded([np.flatnonzero(alphabet_of_class == a) for a in alphabets])
    if alphabet_num_classes.min() < 2:
        raise DataError("every training alphabet needs at least two classes to form a different pair")
    return SamplingTables(
        *(jnp.asarray(t) for t in (alphabet_classes, alphabet_num_classes, class_images, class_num_images))
    )


def _distinct(key: jax.Array, table_rows: jax.Array, lengths: jax.Array, count: int) -> jax.Array:
    """Draws `count` distinct valid entries from each padded row (rows [R, W], lengths [R])."""
    width = table_rows.shape[-1]
    scores = jax.random.uniform(key, table_rows.shape)
    scores = jnp.where(jnp.arange(width) < lengths[..., None], scores, -1.0)
    _, positions = jax.lax.top_k(scores, count)
    return jnp.take_along_axis(table_rows, positions, axis=-1)


def sample_pairs(key: jax.Array, tables: SamplingTables, num_pairs: int) -> Batch:
    """The paper's minibatch: first half same pairs, second half different pairs.

    Alphabets are drawn uniformly; a same pair is one character by two different drawers, a
    different pair two different characters of the same alphabet (the within-alphabet task).
    """
    k_alphabet, k_class, k_other, k_draw_same, k_draw_diff = jax.random.split(key, 5)
    num_alphabets = tables.alphabet_num_classes.shape[0]
    alphabet = jax.random.randint(k_alphabet, (num_pairs,), 0, num_alphabets)
    n_classes = tables.alphabet_num_classes[alphabet]
    first = jax.random.randint(k_class, (num_pairs,), 0, n_classes)
    # An offset in [1, n) picks a different class of the same alphabet uniformly.
    other = (first + jax.random.randint(k_other, (num_pairs,), 1, n_classes)) % n_classes
    is_same = jnp.arange(num_pairs) < num_pairs // 2
    class1 = tables.alphabet_classes[alphabet, first]
    class2 = tables.alphabet_classes[alphabet, jnp.where(is_same, first, other)]

    two_drawers = _distinct(k_draw_same, tables.class_images[class1], tables.class_num_images[class1], 2)
    n2 = tables.class_num_images[class2]
    any_drawer = tables.class_images[class2, jax.random.randint(k_draw_diff, (num_pairs,), 0, n2)]
    image1 = two_drawers[:, 0]
    image2 = jnp.where(is_same, two_drawers[:, 1], any_drawer)
    positions = jnp.arange(num_pairs)
    return Batch(
        images=jnp.concatenate([image1, image2]),
        left=positions,
        right=positions + num_pairs,
        same=is_same.astype(jnp.float32),
    )


@dataclasses.dataclass(frozen=True)
class GroupLayout:
    """A batch of `alphabets` groups, each `classes` characters of one alphabet times `images` drawers."""

    alphabets: int
    classes: int
    images: int

    def pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every unordered pair inside each alphabet group: (left, right, same) as host arrays."""
        group = self.classes * self.images
        left, right = np.triu_indices(group, k=1)
        same = (left // self.images == right // self.images).astype(np.float32)
        offsets = (np.arange(self.alphabets) * group)[:, None]
        return (
            (left[None] + offsets).ravel().astype(np.int32),
            (right[None] + offsets).ravel().astype(np.int32),
            np.tile(same, self.alphabets),
        )


def sample_groups(key: jax.Array, tables: SamplingTables, layout: GroupLayout) -> Batch:
    """Draws alphabets uniformly, distinct characters in each, distinct drawers of each character.

    Scoring every pair inside a group gets far more supervision out of each encoded image than
    independent pairs do, since the head costs little next to the encoder; all negatives are
    within-alphabet, like the one-shot test.
    """
    k_alphabet, k_class, k_image = jax.random.split(key, 3)
    num_alphabets = tables.alphabet_num_classes.shape[0]
    alphabet = jax.random.randint(k_alphabet, (layout.alphabets,), 0, num_alphabets)
    classes = _distinct(
        k_class, tables.alphabet_classes[alphabet], tables.alphabet_num_classes[alphabet], layout.classes
    )  # [alphabets, classes]
    images = _distinct(
        k_image, tables.class_images[classes], tables.class_num_images[classes], layout.images
    )  # [alphabets, classes, images]
    left, right, same = layout.pairs()
    return Batch(images=images.reshape(-1), left=jnp.asarray(left), right=jnp.asarray(right), same=jnp.asarray(same))


def check_group_layout(tables: SamplingTables, layout: GroupLayout) -> None:
    """Raises DataError when an alphabet has too few characters or a character too few images."""
    if int(tables.alphabet_num_classes.min()) < layout.classes:
        raise DataError(
            f"classes_per_alphabet={layout.classes} but the smallest training alphabet has "
            f"{int(tables.alphabet_num_classes.min())} characters"
        )
    if int(tables.class_num_images.min()) < layout.images:
        raise DataError(
            f"images_per_class={layout.images} but some training character has only "
            f"{int(tables.class_num_images.min())} images (drawers)"
        )
