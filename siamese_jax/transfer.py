"""The paper's transfer experiment: 10-way one-shot MNIST with a network trained on Omniglot only.

Preprocessing (the paper does not fully say): MNIST's 28x28 digits are already bright strokes on
black, as the model's Omniglot input is, so they are taken as they are, not binarised, scaled to
[0, 1] and resized with the same antialiased resize as Omniglot to the model's input side. Tasks
are drawn from the 10,000 test images: 10 support digits, one per class, and a different image
of one of those classes as the query. The nearest-neighbour baseline scores the same tasks with
minus the squared Euclidean distance between the same preprocessed pixels.
"""

from __future__ import annotations

import numpy as np
from jax.sharding import Mesh

from siamese_jax.evaluation import scoring
from siamese_jax.data.images import to_model_input
from siamese_jax.data.mnist import load_mnist_test
from siamese_jax.tasks import Trials, random_trials

WAY = 10
DEFAULT_TASKS = 2000
PREPROCESSING = ("MNIST test digits as they are (white on black, not binarised), scaled to [0, 1] and resized "
                 "with Omniglot's antialiased resize to the model's input side")


def mnist_trials(labels: np.ndarray, tasks: int, seed: int) -> Trials:
    """`tasks` 10-way one-shot tasks over every MNIST test image."""
    one_group = np.zeros(len(labels), np.int32)
    return random_trials(np.arange(len(labels)), one_group, labels, WAY, 1, tasks, seed)


def nearest_neighbour_scores(images: np.ndarray, trials: Trials, chunk: int = 256) -> np.ndarray:
    """Scores [T, N]: minus the squared pixel distance from the query, averaged over each class's shots."""
    x = np.asarray(images, np.float32).reshape(len(images), -1) / 255.0
    scores = np.empty(trials.support.shape[:2], np.float32)
    for start in range(0, len(trials.query), chunk):
        support = x[trials.support[start : start + chunk]]  # [t, N, K, D]
        query = x[trials.query[start : start + chunk]][:, None, None, :]
        scores[start : start + chunk] = -np.square(support - query).sum(-1).mean(-1)
    return scores


def evaluate_mnist(model, variables: dict, image_size: int, batch_size: int, data_dir: str | None, tasks: int,
                   seed: int, mesh: Mesh | None = None) -> dict:
    """The model's and 1-nearest-neighbour's accuracy on the same 10-way one-shot MNIST tasks."""
    images, labels = load_mnist_test(data_dir)
    trials = mnist_trials(labels, tasks, seed)
    eval_set = scoring.make_eval_set(images, trials, prepare=lambda kept: to_model_input(kept / 255.0, image_size))
    embeddings = scoring.encode(model, variables, eval_set.images, batch_size, mesh)
    model_scores = scoring.trial_scores(model, variables, embeddings, eval_set.trials, mesh)
    return {
        "way": WAY,
        "shots": 1,
        "seed": seed,
        "preprocessing": PREPROCESSING,
        "model": scoring.one_shot_summary(model_scores, eval_set.trials),
        "nearest_neighbour": scoring.one_shot_summary(nearest_neighbour_scores(eval_set.images, eval_set.trials),
                                                         eval_set.trials),
    }


def format_mnist(result: dict) -> str:
    """One line each for the model and the baseline."""
    lines = []
    for name, key in (("siamese network", "model"), ("1-nearest neighbour (pixels)", "nearest_neighbour")):
        r = result[key]
        lo, hi = r["ci95"]
        lines.append(f"MNIST {result['way']}-way one-shot, {name}: {100 * r['accuracy']:.2f}% over {r['trials']} tasks "
                     f"(95% CI {100 * lo:.1f}-{100 * hi:.1f})")
    return "\n".join(lines)
