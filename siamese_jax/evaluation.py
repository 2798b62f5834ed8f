"""One-shot and verification evaluation: encode every distinct image once, score with the head alone.

Generic over datasets: an experiment (siamese_jax/experiments/) says which images form a split;
the evaluators here draw fixed tasks from it and score a model on them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from siamese_jax import distributed
from siamese_jax.data.images import to_float
from siamese_jax.errors import ConfigError
from siamese_jax.models import SiameseNet, average_views
from siamese_jax.tasks import Pairs, Trials, random_pairs, random_trials

TRIAL_CHUNK = 128  # Trials scored per call: bounds the [chunk, N, K, D] difference tensor.


@dataclasses.dataclass(frozen=True)
class EvalSet:
    """Model-ready images and the trials and/or pairs that index them."""

    images: np.ndarray  # uint8 [M, S, S(, C)], or [M, V, S, S(, C)]: V views of each (evaluation.encode_views)
    trials: Trials | None = None
    pairs: Pairs | None = None


def make_eval_set(images: np.ndarray, trials: Trials | None = None, pairs: Pairs | None = None,
                  prepare=None) -> EvalSet:
    """Keeps only the images the trials and pairs use, renumbers them, and applies `prepare`.

    `prepare` turns the kept images into uint8 model input (e.g. Omniglot's ink masks resized by
    to_model_input); None means they already are.
    """
    used = [a.ravel() for a in (
        *((trials.support, trials.query) if trials else ()),
        *((pairs.left, pairs.right) if pairs else ()),
    )]
    ids = np.unique(np.concatenate(used))

    def local(a):
        return np.searchsorted(ids, a).astype(np.int32)

    kept = images[ids]
    return EvalSet(
        images=prepare(kept) if prepare is not None else kept,
        trials=dataclasses.replace(trials, support=local(trials.support), query=local(trials.query)) if trials else None,
        pairs=dataclasses.replace(pairs, left=local(pairs.left), right=local(pairs.right)) if pairs else None,
    )


def encode(model: SiameseNet, variables: dict, images: np.ndarray, batch_size: int, mesh: Mesh | None = None) -> jax.Array:
    """Embeddings [M, D] of uint8 images [M, S, S(, C)], in fixed-size batches split over the mesh's devices.

    The batch size is rounded up to a multiple of the device count; the embeddings come back
    replicated on every device. `mesh` defaults to every device.
    """
    mesh = mesh or distributed.data_mesh()
    batch_size = -(-batch_size // mesh.size) * mesh.size
    embed = embed_fn(model, mesh)
    variables = distributed.put(variables, distributed.replicated(mesh))
    split = distributed.batch_sharded(mesh)
    count = len(images)
    padded = np.concatenate([images, np.zeros((-count % batch_size, *images.shape[1:]), images.dtype)])
    chunks = distributed.paced(
        embed(variables, distributed.put(padded[i : i + batch_size], split)) for i in range(0, len(padded), batch_size)
    )
    return jnp.concatenate(list(chunks))[:count]


def encode_views(model: SiameseNet, variables: dict, views: np.ndarray, batch_size: int,
                 mesh: Mesh | None = None) -> jax.Array:
    """Embeddings [M, D] of images given as V views each, uint8 [M, V, S, S(, C)] (crops of one photo): the
    views' embeddings averaged, back to unit length for unit-length embeddings, as test_time_flip averages
    an image and its mirror image's."""
    count, num_views = views.shape[:2]
    flat = encode(model, variables, views.reshape(count * num_views, *views.shape[2:]), batch_size, mesh)
    return average_views(flat.reshape(count, num_views, -1), 1, model.encoder.embedding == "normalize")


# The jitted functions are built once per model and mesh (linen modules hash by their fields):
# a fresh jax.jit per call would trace and compile again at every epoch's validation.
@functools.lru_cache(maxsize=8)
def embed_fn(model: SiameseNet, mesh: Mesh | None = None):
    """Jitted (variables, uint8 images [B, S, S(, C)]) -> embeddings [B, D], replicated over `mesh` if given."""
    return jax.jit(
        lambda variables, x: model.apply(variables, to_float(x), method=SiameseNet.embed),
        out_shardings=distributed.replicated(mesh) if mesh is not None else None,
    )


def _replicated_inputs(mesh: Mesh | None, *trees):
    """Host or device values as arrays replicated over `mesh` (default: every device)."""
    where = distributed.replicated(mesh or distributed.data_mesh())
    return tuple(distributed.put(tree, where) for tree in trees)


@functools.lru_cache(maxsize=8)
def _trial_score_fn(model: SiameseNet):
    @jax.jit
    def score(variables, embeddings, query, support):
        h_query = embeddings[query][:, None, None, :]  # [T, 1, 1, D]
        logits = model.apply(variables, h_query, embeddings[support], method=SiameseNet.score)
        return mean_log_probability(logits)

    return score


def mean_log_probability(logits: jax.Array) -> jax.Array:
    """log of the mean same-class probability over the last axis (the K shots), computed without rounding.

    In float32 the sigmoid itself is exactly 1.0 for logits above about 17, so a confident model's
    candidates would tie; log-sigmoid keeps them apart, and log-mean-exp averages the shots.
    """
    return jax.nn.logsumexp(jax.nn.log_sigmoid(logits.astype(jnp.float32)), axis=-1) - jnp.log(logits.shape[-1])


def trial_scores(model: SiameseNet, variables: dict, embeddings: jax.Array, trials: Trials,
                 mesh: Mesh | None = None) -> np.ndarray:
    """Score [T, N] of each trial's support classes for its query: the log of the mean same-class
    probability over the class's K shots (exp() gives the probability)."""
    score = _trial_score_fn(model)
    count = len(trials.query)
    pad = -count % TRIAL_CHUNK
    query = np.concatenate([trials.query, np.zeros(pad, np.int32)])
    support = np.concatenate([trials.support, np.zeros((pad, *trials.support.shape[1:]), np.int32)])
    variables, embeddings = _replicated_inputs(mesh, variables, embeddings)
    out = list(distributed.paced(
        score(variables, embeddings, *_replicated_inputs(mesh, query[i : i + TRIAL_CHUNK], support[i : i + TRIAL_CHUNK]))
        for i in range(0, len(query), TRIAL_CHUNK)
    ))
    return np.concatenate([np.asarray(chunk) for chunk in out])[:count]


def pair_logits(model: SiameseNet, variables: dict, embeddings: jax.Array, pairs: Pairs,
                mesh: Mesh | None = None) -> np.ndarray:
    """Logit [P] that each pair shows one class (sigmoid() gives the probability; ranking by logits
    never ties where float32 probabilities round to 1.0)."""
    return np.asarray(_pair_score_fn(model)(*_replicated_inputs(mesh, variables, embeddings, pairs.left, pairs.right)))


def eval_set_pair_logits(model: SiameseNet, variables: dict, eval_set: EvalSet, batch_size: int,
                         mesh: Mesh | None = None) -> np.ndarray:
    """The logits [P] of an EvalSet's pairs: its images encoded once, then scored by the head."""
    embeddings = encode(model, variables, eval_set.images, batch_size, mesh)
    return pair_logits(model, variables, embeddings, eval_set.pairs, mesh)


COHORT_CHUNK = 64  # Images scored against the whole cohort per call: bounds the [chunk, C, D] head input.


@functools.lru_cache(maxsize=8)
def _cohort_statistics_fn(model: SiameseNet, top: int):
    @jax.jit
    def statistics(variables, embeddings, cohort):
        logits = model.apply(variables, embeddings[:, None, :], cohort[None], method=SiameseNet.score)  # [B, C]
        best = jax.lax.top_k(logits.astype(jnp.float32), top)[0]
        return best.mean(axis=-1), best.std(axis=-1)

    return statistics


def cohort_statistics(model: SiameseNet, variables: dict, embeddings: jax.Array, cohort: jax.Array, top: int,
                      mesh: Mesh | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation [M] of each embedding's `top` highest logits against cohort embeddings [C, D]."""
    statistics = _cohort_statistics_fn(model, min(top, len(cohort)))
    count = len(embeddings)
    padded = jnp.concatenate([embeddings, jnp.zeros((-count % COHORT_CHUNK, embeddings.shape[1]), embeddings.dtype)])
    variables, cohort = _replicated_inputs(mesh, variables, cohort)
    out = list(distributed.paced(statistics(variables, *_replicated_inputs(mesh, padded[i : i + COHORT_CHUNK]), cohort)
                                 for i in range(0, len(padded), COHORT_CHUNK)))
    return tuple(np.concatenate([np.asarray(chunk[j]) for chunk in out])[:count] for j in (0, 1))


def adaptive_score_norm(logits: np.ndarray, pairs: Pairs, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Adaptive symmetric score normalisation (AS-norm; Matejka et al., 2017) of pair logits [P].

    Each pair's logit is standardised by the cohort statistics of either image (mean and std [M]
    of its highest logits against a cohort of other people), and the two are averaged: an image
    that looks like many people has its matches discounted, a distinctive one has them raised.
    """
    return 0.5 * ((logits - mean[pairs.left]) / np.maximum(std[pairs.left], 1e-6)
                  + (logits - mean[pairs.right]) / np.maximum(std[pairs.right], 1e-6))


@functools.lru_cache(maxsize=8)
def _pair_score_fn(model: SiameseNet):
    return jax.jit(lambda v, e, a, b: model.apply(v, e[a], e[b], method=SiameseNet.score).astype(jnp.float32))


def wilson_interval(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion."""
    if total == 0:
        return (0.0, 1.0)
    p = correct / total
    center = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return (max(0.0, center - half), min(1.0, center + half))


def picked_correctly(scores: np.ndarray, answer: np.ndarray) -> np.ndarray:
    """Whether each trial's answer scores strictly above every other candidate: a tie at the top is wrong."""
    top = scores.max(axis=1, keepdims=True)
    return (scores[np.arange(len(answer)), answer] == top[:, 0]) & ((scores == top).sum(axis=1) == 1)


def chosen_candidates(scores: np.ndarray, answer: np.ndarray) -> np.ndarray:
    """The candidate each trial picks, as picked_correctly judges it: the answer when it scores strictly
    best, otherwise the best-scored other candidate."""
    others = np.where(np.arange(scores.shape[1]) == answer[:, None], -np.inf, scores)
    return np.where(picked_correctly(scores, answer), answer, others.argmax(axis=1))


def one_shot_summary(scores: np.ndarray, trials: Trials, group_names=None) -> dict:
    """Accuracy of picking the best-scored class (ties at the top count as wrong), overall and per group,
    with a 95% interval."""
    correct = picked_correctly(scores, trials.answer)
    summary = {
        "trials": int(correct.size),
        "correct": int(correct.sum()),
        "accuracy": float(correct.mean()),
        "ci95": list(wilson_interval(int(correct.sum()), int(correct.size))),
    }
    if group_names is not None:
        summary["per_run"] = {
            name: {
                "trials": int((trials.group == g).sum()),
                "correct": int(correct[trials.group == g].sum()),
                "accuracy": float(correct[trials.group == g].mean()),
            }
            for g, name in enumerate(group_names)
        }
    return summary


def evaluate_one_shot(model, variables: dict, eval_set: EvalSet, batch_size: int, group_names=None,
                      mesh: Mesh | None = None) -> dict:
    """One-shot summary of an EvalSet's trials."""
    embeddings = encode(model, variables, eval_set.images, batch_size, mesh)
    return one_shot_summary(trial_scores(model, variables, embeddings, eval_set.trials, mesh), eval_set.trials,
                            group_names)


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve: the chance that a random positive outscores a random negative (ties half)."""
    from scipy.stats import rankdata

    positive = np.asarray(positive, bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("the ROC AUC needs both positive and negative pairs")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@dataclasses.dataclass(frozen=True)
class Split:
    """The images a split's tasks are drawn from: `indices` into a dataset's images, groups and labels."""

    images: np.ndarray  # every image of the dataset, in whatever form `prepare` takes
    groups: np.ndarray  # int [N]: trials and different pairs stay within one group (an alphabet)
    labels: np.ndarray  # int [N]: the class of each image
    indices: np.ndarray  # int: the images of this split
    prepare: Callable[[np.ndarray], np.ndarray] | None = None  # kept images -> uint8 model input


class OneShotEvaluator:
    """Fixed `way`-way one-shot trials drawn from a split: accuracy of picking the query's class."""

    metrics = ("one_shot_accuracy",)

    def __init__(self, split: Split, way: int, count: int, seed: int, batch_size: int, mesh: Mesh | None = None):
        trials = random_trials(split.indices, split.groups, split.labels, way, 1, count, seed)
        self.eval_set = make_eval_set(split.images, trials, prepare=split.prepare)
        self.batch_size, self.mesh = batch_size, mesh

    def __call__(self, model, variables: dict) -> dict[str, float]:
        """The metrics of a model's variables."""
        summary = evaluate_one_shot(model, variables, self.eval_set, self.batch_size, mesh=self.mesh)
        return {"one_shot_accuracy": summary["accuracy"]}

    def sizes(self) -> dict[str, int]:
        """How many tasks the metrics average over."""
        return {"one_shot_trials": len(self.eval_set.trials.query)}


class VerificationEvaluator:
    """Fixed pairs from a split, half same class: accuracy at probability 0.5 (logit 0) and ROC AUC."""

    metrics = ("verification_accuracy", "verification_auc")

    def __init__(self, split: Split, count: int, seed: int, batch_size: int, mesh: Mesh | None = None):
        pairs = random_pairs(split.indices, split.groups, split.labels, count, seed)
        self.eval_set = make_eval_set(split.images, pairs=pairs, prepare=split.prepare)
        self.batch_size, self.mesh = batch_size, mesh

    def __call__(self, model, variables: dict) -> dict[str, float]:
        """The metrics of a model's variables."""
        pairs = self.eval_set.pairs
        logits = eval_set_pair_logits(model, variables, self.eval_set, self.batch_size, self.mesh)
        return {"verification_accuracy": float(((logits > 0) == pairs.same).mean()),
                "verification_auc": roc_auc(logits, pairs.same)}

    def sizes(self) -> dict[str, int]:
        """How many pairs the metrics average over."""
        return {"verification_pairs": len(self.eval_set.pairs.same)}


# Validation evaluators a config names in config.validation.evals: name -> (class, how to build it
# from the split and the validation section, batch size and mesh). Verification pairs are drawn
# with seed + 1, so one seed gives trials and pairs that differ.
EVALUATORS = {
    "one_shot": (OneShotEvaluator, lambda split, v, batch, mesh: OneShotEvaluator(
        split, v.way, v.one_shot_trials, v.seed, batch, mesh)),
    "verification": (VerificationEvaluator, lambda split, v, batch, mesh: VerificationEvaluator(
        split, v.verification_pairs, v.seed + 1, batch, mesh)),
}
DEFAULT_EVALS = ("verification", "one_shot")


def evaluator_names(section) -> tuple[str, ...]:
    """config.validation.evals, checked (the default for configs saved before it existed)."""
    names = tuple(section.get("evals", DEFAULT_EVALS))
    unknown = [name for name in names if name not in EVALUATORS]
    if unknown or not names:
        raise ConfigError(f"config.validation.evals must name some of {tuple(EVALUATORS)}, got {names}")
    return names


def metric_names(section) -> tuple[str, ...]:
    """Every metric the named evaluators report, in order."""
    return tuple(m for name in evaluator_names(section) for m in EVALUATORS[name][0].metrics)


def build_evaluators(section, split: Split, batch_size: int, mesh: Mesh | None = None) -> dict:
    """The evaluators config.validation.evals names, each with its fixed tasks drawn from `split`."""
    return {name: EVALUATORS[name][1](split, section, batch_size, mesh) for name in evaluator_names(section)}


def run_evaluators(evaluators: dict, model, variables: dict, with_sizes: bool = False) -> dict:
    """Every evaluator's metrics, merged (and how many tasks each averaged, with `with_sizes`)."""
    metrics = {}
    for evaluator in evaluators.values():
        metrics.update(evaluator(model, variables))
        if with_sizes:
            metrics.update(evaluator.sizes())
    return metrics
