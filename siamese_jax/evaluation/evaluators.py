"""Validation evaluators: fixed tasks drawn from a dataset's split, run after each epoch and named by
config.validation.evals. Generic over datasets: an experiment (siamese_jax/experiments/) says which
images form the split."""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
from jax.sharding import Mesh

from siamese_jax.errors import ConfigError
from siamese_jax.evaluation.metrics import roc_auc
from siamese_jax.evaluation.scoring import eval_set_pair_logits, evaluate_one_shot, make_eval_set
from siamese_jax.tasks import random_pairs, random_trials


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
    """Fixed pairs from a split, half same class: accuracy at probability 0.5 (logit 0) and ROC AUC.

    Different pairs come from two classes of one group (an alphabet), like a one-shot trial's candidates.
    """

    prefix = "verification"
    within_group = True
    metrics = (f"{prefix}_accuracy", f"{prefix}_auc")

    def __init__(self, split: Split, count: int, seed: int, batch_size: int, mesh: Mesh | None = None):
        pairs = random_pairs(split.indices, split.groups, split.labels, count, seed, self.within_group)
        self.eval_set = make_eval_set(split.images, pairs=pairs, prepare=split.prepare)
        self.batch_size, self.mesh = batch_size, mesh

    def __call__(self, model, variables: dict) -> dict[str, float]:
        """The metrics of a model's variables."""
        pairs = self.eval_set.pairs
        logits = eval_set_pair_logits(model, variables, self.eval_set, self.batch_size, self.mesh)
        return {f"{self.prefix}_accuracy": float(((logits > 0) == pairs.same).mean()),
                f"{self.prefix}_auc": roc_auc(logits, pairs.same)}

    def sizes(self) -> dict[str, int]:
        """How many pairs the metrics average over."""
        return {f"{self.prefix}_pairs": len(self.eval_set.pairs.same)}


class AnyGroupVerificationEvaluator(VerificationEvaluator):
    """Verification whose different pairs take two classes from anywhere in the split (mostly two groups).

    The easier form of the test, and the likelier reading of the paper's Table 1 (93.42% on 10,000
    validation pairs), which does not say where its different pairs came from.
    """

    prefix = "verification_any_group"
    within_group = False
    metrics = (f"{prefix}_accuracy", f"{prefix}_auc")


def verification_seed(section) -> int:
    """The seed of the 'verification' evaluator's pairs: seed + 1, so that one seed gives trials and pairs that
    differ (an experiment drawing the same validation pairs, e.g. for a threshold, uses it too)."""
    return section.seed + 1


# Validation evaluators a config names in config.validation.evals: name -> (class, how to build it
# from the split and the validation section, batch size and mesh).
EVALUATORS = {
    "one_shot": (OneShotEvaluator, lambda split, v, batch, mesh: OneShotEvaluator(
        split, v.way, v.one_shot_trials, v.seed, batch, mesh)),
    "verification": (VerificationEvaluator, lambda split, v, batch, mesh: VerificationEvaluator(
        split, v.verification_pairs, verification_seed(v), batch, mesh)),
    "verification_any_group": (AnyGroupVerificationEvaluator, lambda split, v, batch, mesh:
                               AnyGroupVerificationEvaluator(split, v.verification_pairs, v.seed + 2, batch, mesh)),
}


def evaluator_names(section) -> tuple[str, ...]:
    """config.validation.evals, checked."""
    names = tuple(section.evals)
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


def check_config(section) -> None:
    """Rejects config.validation.evals naming unknown evaluators, or a metric none of them reports."""
    if section.metric not in metric_names(section):
        raise ConfigError(f"config.validation.metric={section.metric!r} is none of the metrics of "
                          f"config.validation.evals: {metric_names(section)}")
