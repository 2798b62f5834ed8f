"""Training minibatches drawn on the device: which images to encode and which pairs to score."""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from siamese_jax.errors import ConfigError, DataError


class SamplingTables(NamedTuple):
    """Padded index tables of a training set; rows are ragged, with their lengths alongside."""

    group_classes: jax.Array  # int32 [G, max classes]: class ids of each group (alphabet)
    group_num_classes: jax.Array  # int32 [G]
    class_images: jax.Array  # int32 [C, max images]: image ids of each class (character)
    class_num_images: jax.Array  # int32 [C]


class Batch(NamedTuple):
    """A minibatch: images to encode, and the pairs (positions in `images`) to score with labels."""

    images: jax.Array  # int32 [M] image ids
    left: jax.Array  # int32 [P]
    right: jax.Array  # int32 [P]
    same: jax.Array  # float32 [P]: 1 for a pair of one class
    symmetries: jax.Array | None = None  # int32 [M]: each image's symmetry (augment.square_symmetries); None: none


def _padded(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Stacks ragged int rows into a -1 padded matrix and their lengths."""
    lengths = np.array([len(r) for r in rows], np.int32)
    table = np.full((len(rows), lengths.max()), -1, np.int32)
    for i, row in enumerate(rows):
        table[i, : len(row)] = row
    return table, lengths


def build_tables(group: np.ndarray, label: np.ndarray) -> SamplingTables:
    """Index tables for a set whose image i has group `group[i]` (an alphabet) and class `label[i]` (any integer ids)."""
    class_ids, class_of_image = np.unique(label, return_inverse=True)
    class_images, class_num_images = _padded([np.flatnonzero(class_of_image == c) for c in range(len(class_ids))])
    if class_num_images.min() < 2:
        raise DataError("every training class needs at least two images to form a same pair")
    group_of_class = np.array([group[label == c][0] for c in class_ids])
    groups = np.unique(group_of_class)
    group_classes, group_num_classes = _padded([np.flatnonzero(group_of_class == g) for g in groups])
    if group_num_classes.min() < 2:
        raise DataError("every training group (alphabet) needs at least two classes to form a different pair")
    return SamplingTables(
        *(jnp.asarray(t) for t in (group_classes, group_num_classes, class_images, class_num_images))
    )


def _distinct(key: jax.Array, table_rows: jax.Array, lengths: jax.Array, count: int) -> jax.Array:
    """Draws `count` distinct valid entries from each padded row (rows [R, W], lengths [R])."""
    width = table_rows.shape[-1]
    scores = jax.random.uniform(key, table_rows.shape)
    scores = jnp.where(jnp.arange(width) < lengths[..., None], scores, -1.0)
    _, positions = jax.lax.top_k(scores, count)
    return jnp.take_along_axis(table_rows, positions, axis=-1)


ORIENTATIONS = (1, 2, 4, 8)


def _group_symmetries(key: jax.Array, num_groups: int, orientations: int) -> jax.Array | None:
    """One symmetry (augment.square_symmetries) for each of `num_groups` groups (or pairs), drawn among
    `orientations`: 2, a half turn or none; 4, any quarter turn; 8, those or their mirror images. None for 1."""
    if orientations == 1:
        return None
    # A key of its own, so that runs with one orientation draw exactly what they did before.
    turn_key = jax.random.fold_in(key, 7)
    return jax.random.randint(turn_key, (num_groups,), 0, orientations) * max(1, 4 // orientations)


def sample_pairs(key: jax.Array, tables: SamplingTables, num_pairs: int, orientations: int = 1) -> Batch:
    """The paper's minibatch: first half same pairs, second half different pairs.

    Alphabets are drawn uniformly; a same pair is one character by two different drawers, a
    different pair two different characters of the same alphabet (the within-alphabet task).
    With `orientations` > 1 both images of a pair are turned alike (see _group_symmetries): each turned
    character is a class of its own.
    """
    k_group, k_class, k_other, k_draw_same, k_draw_diff = jax.random.split(key, 5)
    num_groups = tables.group_num_classes.shape[0]
    group = jax.random.randint(k_group, (num_pairs,), 0, num_groups)
    n_classes = tables.group_num_classes[group]
    first = jax.random.randint(k_class, (num_pairs,), 0, n_classes)
    # An offset in [1, n) picks a different class of the same alphabet uniformly.
    other = (first + jax.random.randint(k_other, (num_pairs,), 1, n_classes)) % n_classes
    is_same = jnp.arange(num_pairs) < num_pairs // 2
    class1 = tables.group_classes[group, first]
    class2 = tables.group_classes[group, jnp.where(is_same, first, other)]

    two_drawers = _distinct(k_draw_same, tables.class_images[class1], tables.class_num_images[class1], 2)
    n2 = tables.class_num_images[class2]
    any_drawer = tables.class_images[class2, jax.random.randint(k_draw_diff, (num_pairs,), 0, n2)]
    image1 = two_drawers[:, 0]
    image2 = jnp.where(is_same, two_drawers[:, 1], any_drawer)
    positions = jnp.arange(num_pairs)
    symmetries = _group_symmetries(key, num_pairs, orientations)
    return Batch(
        images=jnp.concatenate([image1, image2]),
        left=positions,
        right=positions + num_pairs,
        same=is_same.astype(jnp.float32),
        symmetries=None if symmetries is None else jnp.concatenate([symmetries, symmetries]),
    )


@dataclasses.dataclass(frozen=True)
class GroupLayout:
    """A batch of `groups` groups, each `classes` classes of one group (characters of an alphabet) times `images`
    images of each (drawers)."""

    groups: int
    classes: int
    images: int

    def pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every unordered pair inside each group: (left, right, same) as host arrays."""
        group = self.classes * self.images
        left, right = np.triu_indices(group, k=1)
        same = (left // self.images == right // self.images).astype(np.float32)
        offsets = (np.arange(self.groups) * group)[:, None]
        return (
            (left[None] + offsets).ravel().astype(np.int32),
            (right[None] + offsets).ravel().astype(np.int32),
            np.tile(same, self.groups),
        )


def sample_groups(key: jax.Array, tables: SamplingTables, layout: GroupLayout, orientations: int = 1) -> Batch:
    """Draws alphabets uniformly, distinct characters in each, distinct drawers of each character.

    Scoring every pair inside a group gets far more supervision out of each encoded image than
    independent pairs do, since the head costs little next to the encoder; all negatives are
    within-alphabet, like the one-shot test. With `orientations` > 1 each group is turned as a
    whole (see _group_symmetries): a turned alphabet is an alphabet of its own, so that its characters
    are new classes and their orientation is no cue.
    """
    k_group, k_class, k_image = jax.random.split(key, 3)
    num_groups = tables.group_num_classes.shape[0]
    group = jax.random.randint(k_group, (layout.groups,), 0, num_groups)
    classes = _distinct(
        k_class, tables.group_classes[group], tables.group_num_classes[group], layout.classes
    )  # [groups, classes]
    images = _distinct(
        k_image, tables.class_images[classes], tables.class_num_images[classes], layout.images
    )  # [groups, classes, images]
    left, right, same = layout.pairs()
    symmetries = _group_symmetries(key, layout.groups, orientations)
    return Batch(
        images=images.reshape(-1), left=jnp.asarray(left), right=jnp.asarray(right), same=jnp.asarray(same),
        symmetries=None if symmetries is None else jnp.repeat(symmetries, layout.classes * layout.images),
    )


def check_group_layout(tables: SamplingTables, layout: GroupLayout) -> None:
    """Raises DataError when a group has too few classes or a class too few images."""
    if int(tables.group_num_classes.min()) < layout.classes:
        raise DataError(
            f"classes_per_group={layout.classes} but the smallest training group (alphabet) has "
            f"{int(tables.group_num_classes.min())} classes"
        )
    if int(tables.class_num_images.min()) < layout.images:
        raise DataError(
            f"images_per_class={layout.images} but some training class has only "
            f"{int(tables.class_num_images.min())} images"
        )


SAMPLING_METHODS = ("pairs", "groups")


@dataclasses.dataclass(frozen=True)
class SamplerSettings:
    """How a training step samples (config.sampling and its sizes): 'pairs', `batch_size` independent pairs,
    half same (the paper); or 'groups', `batch_size` images in groups of `classes_per_group` classes x
    `images_per_class` images, every pair inside each group scored. `orientations` (1, 2, 4 or 8): how
    many orientations of each training class are classes of their own (8: the quarter turns and their
    mirror images)."""

    method: str
    batch_size: int
    classes_per_group: int = 0
    images_per_class: int = 0
    orientations: int = 1

    @classmethod
    def from_config(cls, config) -> "SamplerSettings":
        """The config's sampling entries, checked."""
        settings = cls(config.sampling, config.batch_size, config.classes_per_group, config.images_per_class,
                       config.orientations)
        if settings.orientations not in ORIENTATIONS:
            raise ConfigError(f"config.orientations must be one of {ORIENTATIONS}, got {settings.orientations!r}")
        settings.pairs_per_step()
        return settings

    def layout(self) -> GroupLayout:
        """The groups of a 'groups' batch."""
        per_group = self.classes_per_group * self.images_per_class
        if per_group < 2 or self.batch_size % per_group:
            raise ConfigError(
                f"sampling='groups' needs batch_size ({self.batch_size}) to be a multiple of "
                f"classes_per_group x images_per_class ({per_group}, at least 2)"
            )
        return GroupLayout(self.batch_size // per_group, self.classes_per_group, self.images_per_class)

    def pairs_per_step(self) -> int:
        """Pairs scored per training step: batch_size for 'pairs', every within-group pair for 'groups'."""
        if self.method == "pairs":
            return self.batch_size
        if self.method == "groups":
            return len(self.layout().pairs()[0])
        raise ConfigError(f"config.sampling must be one of {SAMPLING_METHODS}, got {self.method!r}")

    def images_per_step(self) -> int:
        """Images a step encodes: two per pair for 'pairs', the batch for 'groups'."""
        return 2 * self.batch_size if self.method == "pairs" else self.batch_size

    def sampler(self, tables: SamplingTables) -> Callable[[jax.Array, SamplingTables], Batch]:
        """The jittable (key, tables) -> Batch of these settings, checked against the training set's tables."""
        if self.method == "groups":
            layout = self.layout()
            check_group_layout(tables, layout)
            return functools.partial(sample_groups, layout=layout, orientations=self.orientations)
        return functools.partial(sample_pairs, num_pairs=self.pairs_per_step(), orientations=self.orientations)
