"""Pair and group sampling on the device."""

import jax
import numpy as np
import pytest

from siamese_jax import sampling

# 4 alphabets of 3, 5, 8 and 2 characters; every character drawn by 6 drawers.
CHARS_PER_ALPHABET = (3, 5, 8, 2)
alphabet = np.repeat(np.arange(4), np.array(CHARS_PER_ALPHABET) * 6)
character = np.repeat(np.arange(sum(CHARS_PER_ALPHABET)), 6)
drawer = np.tile(np.arange(6), sum(CHARS_PER_ALPHABET))
TABLES = sampling.build_tables(alphabet, character)


def test_pairs_same_differ_in_drawer_different_differ_in_character():
    batch = jax.jit(sampling.sample_pairs, static_argnums=2)(jax.random.PRNGKey(0), TABLES, 512)
    images = np.asarray(batch.images)
    left, right = images[np.asarray(batch.left)], images[np.asarray(batch.right)]
    same = np.asarray(batch.same).astype(bool)
    assert same.sum() == 256
    assert np.all(character[left[same]] == character[right[same]])
    assert np.all(drawer[left[same]] != drawer[right[same]])
    assert np.all(character[left[~same]] != character[right[~same]])
    assert np.all(alphabet[left] == alphabet[right])  # Different pairs are within one alphabet.


def test_alphabets_are_balanced_not_weighted_by_size():
    counts = np.zeros(4)
    for seed in range(10):
        batch = sampling.sample_pairs(jax.random.PRNGKey(seed), TABLES, 400)
        counts += np.bincount(alphabet[np.asarray(batch.images)[np.asarray(batch.left)]], minlength=4)
    share = counts / counts.sum()
    # 4000 pairs: each share has standard error 0.007; sizes range 2-8 characters.
    assert np.all(np.abs(share - 0.25) < 0.035)


def test_groups_hold_distinct_characters_and_drawers_and_label_pairs():
    layout = sampling.GroupLayout(groups=3, classes=2, images=3)
    batch = sampling.sample_groups(jax.random.PRNGKey(1), TABLES, layout)
    images = np.asarray(batch.images).reshape(3, 2, 3)
    for group in images:
        assert len(set(alphabet[group.ravel()])) == 1
        assert len(set(character[group[:, 0]])) == 2
        for klass in group:
            assert len(set(character[klass])) == 1 and len(set(drawer[klass])) == 3
    flat = images.ravel()
    left, right = flat[np.asarray(batch.left)], flat[np.asarray(batch.right)]
    np.testing.assert_array_equal(np.asarray(batch.same).astype(bool), character[left] == character[right])
    assert len(batch.left) == 3 * 15 and np.asarray(batch.same).sum() == 3 * 2 * 3


def test_group_layout_checks_alphabet_sizes():
    with pytest.raises(sampling.DataError, match="classes_per_group=3"):
        sampling.check_group_layout(TABLES, sampling.GroupLayout(1, 3, 2))


@pytest.mark.parametrize("orientations, allowed", [(2, {0, 2}), (4, {0, 1, 2, 3}), (8, set(range(8)))])
def test_orientations_turn_whole_groups_and_keep_the_images_drawn(orientations, allowed):
    layout = sampling.GroupLayout(groups=4, classes=2, images=3)
    plain = sampling.sample_groups(jax.random.PRNGKey(3), TABLES, layout)
    assert plain.symmetries is None  # One orientation: the step turns nothing.
    seen = set()
    for seed in range(12):
        turned = sampling.sample_groups(jax.random.PRNGKey(seed), TABLES, layout, orientations=orientations)
        if seed == 3:
            np.testing.assert_array_equal(turned.images, plain.images)
        per_group = np.asarray(turned.symmetries).reshape(4, 6)
        assert np.all(per_group == per_group[:, :1])  # A turned alphabet is turned as a whole.
        seen |= set(per_group[:, 0].tolist())
    assert seen == allowed


def test_orientations_turn_both_images_of_a_pair_alike():
    batch = sampling.sample_pairs(jax.random.PRNGKey(0), TABLES, 64, orientations=4)
    turns = np.asarray(batch.symmetries)
    np.testing.assert_array_equal(turns[np.asarray(batch.left)], turns[np.asarray(batch.right)])
    assert set(turns.tolist()) == {0, 1, 2, 3}


def test_orientations_other_than_1_2_4_8_are_refused():
    class Config:
        sampling, batch_size, classes_per_group, images_per_class, orientations = "pairs", 8, 0, 0, 3

    with pytest.raises(sampling.ConfigError, match="config.orientations must be one of"):
        sampling.SamplerSettings.from_config(Config)
