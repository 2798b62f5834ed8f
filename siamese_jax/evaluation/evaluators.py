"""Validation evaluators: fixed tasks drawn from a dataset's split, run after each epoch and named by
config.validation.evals. Generic over datasets: an experiment (siamese_jax/experiments/) says which
images form the split."""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np
from jax.sharding import Mesh

from siamese_jax.errors import ConfigError
from siamese_jax.evaluation.metrics import roc_auc
from siamese_jax.evaluation.scoring import encode, pair_logits, picked_correctly, trial_scores, used_images
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

    def __init__(self, split: Split, way: int, count: int, seed: int):
        self.tasks = random_trials(split.indices, split.groups, split.labels, way, 1, count, seed)

    def __call__(self, model, variables: dict, embeddings, mesh: Mesh | None = None) -> dict[str, float]:
        """The metrics of a model's variables, given the embeddings of the images `tasks` index."""
        scores = trial_scores(model, variables, embeddings, self.tasks, mesh)
        if np.isnan(scores).any():  # A broken model's: no accuracy to speak of (training calls it divergence).
            return {"one_shot_accuracy": math.nan}
        return {"one_shot_accuracy": float(picked_correctly(scores, self.tasks.answer).mean())}

    def sizes(self) -> dict[str, int]:
        """How many tasks the metrics average over."""
        return {"one_shot_trials": len(self.tasks.query)}

    @staticmethod
    def describe(val: dict) -> str | None:
        """These metrics of a validation result, for a summary line; None when it has none of them."""
        if "one_shot_accuracy" not in val:
            return None
        return f"one-shot {100 * val['one_shot_accuracy']:.2f}% ({val.get('one_shot_trials', '?')} trials)"


class VerificationEvaluator:
    """Fixed pairs from a split, half same class: accuracy at probability 0.5 (logit 0) and ROC AUC.

    Different pairs come from two classes of one group (an alphabet), like a one-shot trial's candidates.
    """

    prefix = "verification"
    within_group = True
    metrics = (f"{prefix}_accuracy", f"{prefix}_auc")

    def __init__(self, split: Split, count: int, seed: int):
        self.tasks = random_pairs(split.indices, split.groups, split.labels, count, seed, self.within_group)

    def __call__(self, model, variables: dict, embeddings, mesh: Mesh | None = None) -> dict[str, float]:
        """The metrics of a model's variables, given the embeddings of the images `tasks` index."""
        logits = pair_logits(model, variables, embeddings, self.tasks, mesh)
        if np.isnan(logits).any():
            return dict.fromkeys(self.metrics, math.nan)
        return {f"{self.prefix}_accuracy": float(((logits > 0) == self.tasks.same).mean()),
                f"{self.prefix}_auc": roc_auc(logits, self.tasks.same)}

    def sizes(self) -> dict[str, int]:
        """How many pairs the metrics average over."""
        return {f"{self.prefix}_pairs": len(self.tasks.same)}

    @classmethod
    def describe(cls, val: dict) -> str | None:
        """These metrics of a validation result, for a summary line; None when it has none of them."""
        if f"{cls.prefix}_accuracy" not in val:
            return None
        where = "within a group" if cls.within_group else "from anywhere"
        return (f"verification {100 * val[f'{cls.prefix}_accuracy']:.2f}% (AUC {val[f'{cls.prefix}_auc']:.4f}; "
                f"{val.get(f'{cls.prefix}_pairs', '?')} pairs, different ones {where})")


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
# from the split and the validation section).
EVALUATORS = {
    "one_shot": (OneShotEvaluator, lambda split, v: OneShotEvaluator(split, v.way, v.one_shot_trials, v.seed)),
    "verification": (VerificationEvaluator, lambda split, v: VerificationEvaluator(
        split, v.verification_pairs, verification_seed(v))),
    "verification_any_group": (AnyGroupVerificationEvaluator, lambda split, v: AnyGroupVerificationEvaluator(
        split, v.verification_pairs, v.seed + 2)),
}


def validation_line(val: dict, label: str = "validation") -> str:
    """One line of the validation metrics a result holds, whichever evaluators reported them."""
    parts = [part for evaluator, _ in EVALUATORS.values() if (part := evaluator.describe(val))]
    return f"{label}: " + (", ".join(parts) or "no metrics")


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


class Validation:
    """The evaluators config.validation.evals names, with their fixed tasks drawn from one split.

    They share the split's images: each image any of their tasks uses is prepared once, when built,
    and encoded once per call, however many evaluators use it. Each evaluator draws its `tasks`
    (tasks.Trials or tasks.Pairs) in dataset ids; they are renumbered here to positions among those images.
    """

    def __init__(self, section, split: Split, batch_size: int, mesh: Mesh | None = None):
        self.evaluators = {name: EVALUATORS[name][1](split, section) for name in evaluator_names(section)}
        used = [ids for evaluator in self.evaluators.values() for ids in evaluator.tasks.image_ids()]
        self.images, local = used_images(split.images, used, split.prepare)
        for evaluator in self.evaluators.values():
            evaluator.tasks = evaluator.tasks.renumbered(local)
        self.batch_size, self.mesh = batch_size, mesh

    def __call__(self, model, variables: dict, with_sizes: bool = False) -> dict:
        """Every evaluator's metrics, merged (and how many tasks each averaged, with `with_sizes`)."""
        embeddings = encode(model, variables, self.images, self.batch_size, self.mesh)
        metrics = {}
        for evaluator in self.evaluators.values():
            metrics.update(evaluator(model, variables, embeddings, self.mesh))
            if with_sizes:
                metrics.update(evaluator.sizes())
        return metrics


def check_config(section) -> None:
    """Rejects config.validation.evals naming unknown evaluators, or a metric none of them reports."""
    if section.metric not in metric_names(section):
        raise ConfigError(f"config.validation.metric={section.metric!r} is none of the metrics of "
                          f"config.validation.evals: {metric_names(section)}")
