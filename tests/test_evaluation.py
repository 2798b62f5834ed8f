"""Scoring one-shot trials and verification pairs."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from siamese_jax import tasks
from siamese_jax.evaluation import evaluators, metrics, score_norm, scoring
from siamese_jax.errors import DataError
from siamese_jax.data import omniglot
from siamese_jax.models import Encoder, SiameseNet, init_variables
from tests.conftest import REPO, devices_env


def _trials(count=2000, way=20, seed=0):
    rng = np.random.default_rng(seed)
    return tasks.Trials(
        support=rng.integers(0, 100, (count, way, 1)).astype(np.int32),
        query=rng.integers(0, 100, count).astype(np.int32),
        answer=rng.integers(0, way, count).astype(np.int32),
        group=np.zeros(count, np.int32),
    )


def test_perfect_scorer_gets_everything_right():
    trials = _trials()
    probabilities = np.eye(20)[trials.answer] * 0.9 + 0.05
    summary = scoring.one_shot_summary(probabilities, trials, group_names=["all"])
    assert summary["accuracy"] == 1.0 and summary["correct"] == summary["trials"] == 2000
    assert summary["per_run"]["all"]["accuracy"] == 1.0


def test_random_scorer_gets_about_one_in_twenty():
    trials = _trials()
    probabilities = np.random.default_rng(1).uniform(size=(2000, 20))
    summary = scoring.one_shot_summary(probabilities, trials)
    # 2000 trials at p = 0.05: standard error 0.0049.
    assert abs(summary["accuracy"] - 0.05) < 0.02
    low, high = summary["ci95"]
    assert low < 0.05 < high


def test_wilson_interval_contains_estimate_and_narrows():
    wide = metrics.wilson_interval(368, 400)
    narrow = metrics.wilson_interval(3680, 4000)
    assert wide[0] < 0.92 < wide[1] and narrow[0] < 0.92 < narrow[1]
    assert narrow[1] - narrow[0] < wide[1] - wide[0]
    assert metrics.wilson_interval(400, 400)[1] == 1.0


def test_random_trials_are_within_alphabet_with_disjoint_query(synthetic_data_dir, cache_dir):
    dataset = omniglot.load_omniglot(str(synthetic_data_dir), str(cache_dir))
    ids = dataset.select("evaluation", ("Run_A", "Run_B"), tuple(range(1, 9)))
    trials = tasks.random_trials(ids, dataset.alphabet, dataset.character, way=4, shots=2, count=50, seed=3)
    assert trials.support.shape == (50, 4, 2)
    for t in range(50):
        support = trials.support[t]
        assert len(set(dataset.alphabet[support.ravel()])) == 1
        assert len(set(dataset.character[support[:, 0]])) == 4
        assert dataset.character[trials.query[t]] == dataset.character[support[trials.answer[t], 0]]
        assert trials.query[t] not in support
    again = tasks.random_trials(ids, dataset.alphabet, dataset.character, way=4, shots=2, count=50, seed=3)
    np.testing.assert_array_equal(again.support, trials.support)


def test_random_pairs_are_half_same(synthetic_data_dir, cache_dir):
    dataset = omniglot.load_omniglot(str(synthetic_data_dir), str(cache_dir))
    ids = dataset.select("evaluation", ("Val_A", "Val_B"), (1, 2, 3, 4))
    pairs = tasks.random_pairs(ids, dataset.alphabet, dataset.character, 100, seed=0)
    same = dataset.character[pairs.left] == dataset.character[pairs.right]
    np.testing.assert_array_equal(same, pairs.same)
    assert pairs.same.sum() == 50 and np.all(pairs.left != pairs.right)


def test_head_scores_match_pairwise_model_calls():
    """Encoding once then scoring with the head equals running the whole network on each pair."""
    model = SiameseNet(Encoder(features=(4, 4), kernel_sizes=(3, 3), embedding_dim=8, padding="SAME", init_scheme="lecun"))
    variables = init_variables(model, jax.random.PRNGKey(0), (12, 12))
    images = (np.random.default_rng(0).uniform(size=(7, 12, 12)) * 255).astype(np.uint8)
    trials = tasks.Trials(
        support=np.array([[[0], [1], [2]], [[3], [4], [5]]], np.int32),
        query=np.array([6, 2], np.int32), answer=np.array([0, 1], np.int32), group=np.zeros(2, np.int32),
    )
    embeddings = scoring.encode(model, variables, images, batch_size=4)
    probabilities = np.exp(scoring.trial_scores(model, variables, embeddings, trials))
    x = jnp.asarray(images, jnp.float32) / 255
    for t in range(2):
        for n in range(3):
            direct = jax.nn.sigmoid(model.apply(variables, x[trials.query[t]][None], x[trials.support[t, n]]))
            assert probabilities[t, n] == pytest.approx(float(direct[0]), rel=1e-4)


@pytest.mark.parametrize("turns", [2, 4, 8])
def test_test_time_turns_average_each_turns_scores(turns):
    """With V test-time turns a trial's class scores the mean probability over its shots under each turn of
    query and support alike (with 8, each turn of them and of their mirror images), and a pair the logit of its mean
    probability: against whole-network calls on turned images."""
    model = SiameseNet(Encoder(features=(4, 4), kernel_sizes=(3, 3), embedding_dim=8, padding="SAME", init_scheme="lecun"),
                       test_time_turns=turns)
    variables = init_variables(model, jax.random.PRNGKey(0), (12, 12))
    # A head 50x as sharp: logits far from 0, where the mean logit and the logit of the mean probability part.
    variables = {**variables, "params": {**variables["params"],
                                         "head": jax.tree.map(lambda x: 50 * x, variables["params"]["head"])}}
    images = (np.random.default_rng(0).uniform(size=(7, 12, 12)) * 255).astype(np.uint8)
    trials = tasks.Trials(
        support=np.array([[[0, 1], [2, 3]], [[3, 4], [5, 6]]], np.int32),
        query=np.array([6, 2], np.int32), answer=np.array([0, 1], np.int32), group=np.zeros(2, np.int32),
    )
    embeddings = scoring.encode(model, variables, images, batch_size=4)
    assert embeddings.shape == (turns, 7, 8)
    scores = np.exp(scoring.trial_scores(model, variables, embeddings, trials))
    pairs = tasks.Pairs(np.array([0, 6], np.int32), np.array([1, 2], np.int32), np.zeros(2, bool))
    logits = scoring.pair_logits(model, variables, embeddings, pairs)
    sources = (images, images[:, :, ::-1]) if turns == 8 else (images,)
    turned = [jnp.asarray(np.rot90(source, k, axes=(1, 2)), jnp.float32) / 255
              for source in sources for k in range(0, 4, max(1, 4 // turns))]
    direct = lambda a, b: [float(model.apply(variables, x[a][None], x[b][None])[0]) for x in turned]
    for t in range(2):
        for n in range(2):
            probabilities = [jax.nn.sigmoid(logit) for k in trials.support[t, n] for logit in direct(trials.query[t], k)]
            assert scores[t, n] == pytest.approx(float(np.mean(probabilities)), rel=1e-4)
    for p in range(2):
        each = np.array(direct(pairs.left[p], pairs.right[p]))
        mean = float(np.mean(jax.nn.sigmoid(each)))
        assert logits[p] == pytest.approx(np.log(mean / (1 - mean)), rel=1e-4, abs=1e-5)
        assert abs(logits[p] - each.mean()) > 1e-3  # Not the mean logit.
    # One turn alone is not the average: the turns change the scores.
    plain = SiameseNet(model.encoder)
    unturned = scoring.pair_logits(plain, variables, scoring.encode(plain, variables, images, 4), pairs)
    assert not np.allclose(unturned, logits)


def test_validation_encodes_its_images_once_and_scores_as_each_evaluator_alone(monkeypatch):
    """The evaluators share one encoding of the split's images: the same metrics as encoding each evaluator's own."""
    import ml_collections

    rng = np.random.default_rng(0)
    groups, labels = np.repeat(np.arange(3), 24), np.repeat(np.arange(18), 4)  # 3 groups of 6 classes x 4 images.
    images = (rng.uniform(size=(72, 12, 12)) * 255).astype(np.uint8)
    split = evaluators.Split(images, groups, labels, np.arange(72))
    section = ml_collections.ConfigDict(dict(way=4, one_shot_trials=30, verification_pairs=40, seed=5,
                                             evals=("verification", "verification_any_group", "one_shot")))
    model = SiameseNet(Encoder(features=(4, 4), kernel_sizes=(3, 3), embedding_dim=8, padding="SAME", init_scheme="lecun"))
    variables = init_variables(model, jax.random.PRNGKey(0), (12, 12))
    calls = []
    encode = scoring.encode
    monkeypatch.setattr(evaluators, "encode", lambda *args, **kw: calls.append(len(args[2])) or encode(*args, **kw))
    shared = evaluators.Validation(section, split, batch_size=16)(model, variables, with_sizes=True)
    assert len(calls) == 1 and calls[0] <= 72  # One encoding, each image once.

    trials = tasks.random_trials(split.indices, groups, labels, 4, 1, 30, 5)
    alone = {"one_shot_accuracy": scoring.evaluate_one_shot(
        model, variables, scoring.make_eval_set(images, trials), 16)["accuracy"]}
    for prefix, seed, within in (("verification", 6, True), ("verification_any_group", 7, False)):
        pairs = tasks.random_pairs(split.indices, groups, labels, 40, seed, within)
        logits = scoring.eval_set_pair_logits(model, variables, scoring.make_eval_set(images, pairs=pairs), 16)
        alone |= {f"{prefix}_accuracy": float(((logits > 0) == pairs.same).mean()),
                  f"{prefix}_auc": metrics.roc_auc(logits, pairs.same)}
    assert {k: shared[k] for k in alone} == pytest.approx(alone, abs=1e-6)
    assert (shared["one_shot_trials"], shared["verification_pairs"], shared["verification_any_group_pairs"]) == (30, 40, 40)
    assert 0.0 < shared["verification_auc"] < 1.0  # A real, untrained score, not a constant.


ENCODE_ON_EIGHT_DEVICES = """
import jax
import numpy as np
from siamese_jax import distributed
from siamese_jax.evaluation import scoring
from siamese_jax.models import Encoder, SiameseNet, init_variables

model = SiameseNet(Encoder(features=(32, 64, 64, 128), kernel_sizes=(3, 3, 3, 3), embedding_dim=128,
                           padding="SAME", init_scheme="lecun"))
variables = init_variables(model, jax.random.PRNGKey(0), (32, 32))
images = (np.random.default_rng(1).uniform(size=(2400, 32, 32)) * 255).astype(np.uint8)
assert len(jax.devices()) == 8
every_device = scoring.encode(model, variables, images, batch_size=32)
one_device = scoring.encode(model, variables, images, batch_size=256, mesh=distributed.data_mesh(jax.devices()[:1]))
np.testing.assert_allclose(np.asarray(every_device), np.asarray(one_device), rtol=1e-4, atol=1e-5)
print("ok")
"""


@pytest.mark.slow
def test_encoding_many_batches_on_every_device_matches_one_device():
    """75 queued 8-device programs deadlocked XLA:CPU (jax 0.10.2) until encoding paced them (distributed.paced):
    on 8 forced devices, in a process of its own."""
    done = subprocess.run([sys.executable, "-c", ENCODE_ON_EIGHT_DEVICES], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **devices_env(8)})
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_a_tie_at_the_top_counts_as_wrong():
    trials = _trials(count=3, way=3)
    scores = np.zeros((3, 3))
    scores[0, trials.answer[0]] = 1.0  # Strictly best: right.
    scores[1, :] = 1.0  # Every candidate tied: wrong, whichever index argmax would give.
    scores[2, trials.answer[2]] = scores[2, (trials.answer[2] + 1) % 3] = 1.0  # Answer tied with another: wrong.
    assert scoring.one_shot_summary(scores, trials)["correct"] == 1
    chosen = scoring.chosen_candidates(scores, trials.answer)
    assert chosen[0] == trials.answer[0] and chosen[2] == (trials.answer[2] + 1) % 3 and chosen[1] != trials.answer[1]


def test_confident_logits_keep_their_order_where_float32_probabilities_round_to_one():
    logits = jnp.array([[[20.0], [25.0], [30.0]]])  # sigmoid() is exactly 1.0 for each in float32.
    assert np.all(np.asarray(jax.nn.sigmoid(logits)) == 1.0)
    scores = np.asarray(scoring.mean_log_probability(logits))
    assert scores[0, 2] > scores[0, 1] > scores[0, 0]
    # K shots: the log of the mean probability, not the mean of the logits.
    two_shots = scoring.mean_log_probability(jnp.array([[0.0, -100.0]]))
    assert float(two_shots[0]) == pytest.approx(np.log(0.25), rel=1e-5)


def test_verification_ranks_pairs_by_logits(monkeypatch):
    """AUC from logits: saturated probabilities would tie and count half."""
    monkeypatch.setattr(evaluators, "pair_logits", lambda *args: np.array([30.0, 20.0, -1.0, 25.0]))
    evaluator = evaluators.VerificationEvaluator.__new__(evaluators.VerificationEvaluator)
    evaluator.tasks = tasks.Pairs(np.arange(4), np.arange(4), np.array([True, False, False, True]))
    scores = evaluator(None, {}, embeddings=None)
    # Both same pairs outscore both different ones; as float32 probabilities, 30, 25 and 20 all tie at
    # 1.0 and the AUC would be 0.75.
    assert scores["verification_auc"] == 1.0
    assert metrics.roc_auc(np.asarray(jax.nn.sigmoid(jnp.array([30.0, 20.0, -1.0, 25.0]))),
                           np.array([True, False, False, True])) == 0.75
    assert scores["verification_accuracy"] == 0.75  # Logit 20 > 0 calls a different pair 'same'.


def test_random_pairs_skip_single_image_classes_for_same_pairs():
    # Two groups; class 1 and class 3 have a single image each.
    group = np.array([0, 0, 0, 1, 1, 1])
    label = np.array([0, 0, 1, 2, 2, 3])
    pairs = tasks.random_pairs(np.arange(6), group, label, 200, seed=0)
    same = pairs.same
    assert set(label[pairs.left[same]]) <= {0, 2} and np.all(label[pairs.left[same]] == label[pairs.right[same]])
    assert np.all(pairs.left[same] != pairs.right[same])
    assert {1, 3} & set(label[np.concatenate([pairs.left[~same], pairs.right[~same]])])  # Still in different pairs.
    with pytest.raises(DataError, match="classes with two or more images"):
        tasks.random_pairs(np.arange(3), np.zeros(3, int), np.arange(3), 10, seed=0)


@pytest.mark.parametrize("head", ["l1", "euclidean"])
def test_cohort_statistics_are_each_images_top_logits_mean_and_std(head):
    model = SiameseNet(Encoder(features=(4,), kernel_sizes=(3,), embedding_dim=8, padding="SAME", init_scheme="lecun"),
                       head_type=head)
    variables = init_variables(model, jax.random.PRNGKey(0), (6, 6))
    rng = np.random.default_rng(0)
    embeddings, cohort = jnp.asarray(rng.uniform(size=(70, 8))), jnp.asarray(rng.uniform(size=(30, 8)))
    mean, std = score_norm.cohort_statistics(model, variables, embeddings, cohort, top=5)
    for i in (0, 33, 69):  # Images of the first, second and padded last chunk.
        logits = np.array([float(model.apply(variables, embeddings[i], cohort[c], method=SiameseNet.score))
                           for c in range(30)])
        best = np.sort(logits)[-5:]
        assert mean[i] == pytest.approx(best.mean(), rel=1e-4, abs=1e-5)
        assert std[i] == pytest.approx(best.std(), rel=1e-3, abs=1e-5)
    everyone = score_norm.cohort_statistics(model, variables, embeddings, cohort, top=1000)  # Capped at the cohort.
    assert everyone[0].shape == (70,) and np.all(everyone[0] < mean)


def test_adaptive_score_norm_averages_both_images_standardised_scores():
    pairs = tasks.Pairs(left=np.array([0, 1]), right=np.array([2, 0]), same=np.array([True, False]))
    mean, std = np.array([1.0, -1.0, 0.5]), np.array([2.0, 0.5, 1.0])
    normalised = score_norm.adaptive_score_norm(np.array([3.0, 0.0]), pairs, mean, std)
    np.testing.assert_allclose(normalised, [0.5 * ((3 - 1) / 2 + (3 - 0.5) / 1), 0.5 * ((0 + 1) / 0.5 + (0 - 1) / 2)])


@pytest.mark.parametrize("embedding", ["normalize", "sigmoid"])
def test_encode_views_averages_each_images_views(embedding):
    model = SiameseNet(Encoder(features=(4,), kernel_sizes=(3,), embedding_dim=8, padding="SAME", init_scheme="lecun",
                               embedding=embedding))
    variables = init_variables(model, jax.random.PRNGKey(0), (6, 6, 3))
    views = np.random.default_rng(0).integers(0, 256, (5, 3, 6, 6, 3)).astype(np.uint8)
    averaged = np.asarray(scoring.encode_views(model, variables, views, batch_size=4))
    each = np.stack([np.asarray(scoring.encode(model, variables, views[:, v], batch_size=4)) for v in range(3)], 1)
    expected = each.mean(1)
    if embedding == "normalize":
        expected /= np.linalg.norm(expected, axis=-1, keepdims=True)
    np.testing.assert_allclose(averaged, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(averaged, each[:, 0], atol=1e-3)  # The other views count.


def test_eight_test_time_views_are_the_symmetries_that_training_draws():
    from siamese_jax.augment import square_symmetries

    images = (np.random.default_rng(1).uniform(size=(3, 6, 6)) * 255).astype(np.uint8)
    views = scoring.symmetric_views(images, 8)
    for k, view in enumerate(views):
        np.testing.assert_array_equal(view, square_symmetries(jnp.asarray(images), jnp.full(3, k)))
    assert len({view.tobytes() for view in views}) == 8
    np.testing.assert_array_equal(scoring.symmetric_views(images, 2)[1], images[:, ::-1, ::-1])
