"""What training needs from a dataset: its training images and labels, a validator, the final report."""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
from jax.sharding import Mesh

from siamese_jax import evaluation
from siamese_jax.errors import ConfigError

DATASETS = ("omniglot", "lfw")


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A dataset's part of a training run."""

    train_images: np.ndarray  # uint8 model input [N, S, S(, C)]
    train_groups: np.ndarray  # int [N]: different pairs are drawn within one group (an alphabet)
    train_labels: np.ndarray  # int [N]: the class (character, person) of each image
    validator: evaluation.Validator
    evaluate: Callable  # (model, variables, mesh) -> the report of a trained model
    summarize: Callable[[dict], str]  # that report as text


def dataset_name(config) -> str:
    """config.dataset, checked ('omniglot' when absent: configs saved before faces existed)."""
    name = config.get("dataset", "omniglot")
    if name not in DATASETS:
        raise ConfigError(f"config.dataset must be one of {DATASETS}, got {name!r}")
    return name


def omniglot_experiment(config, mesh: Mesh | None) -> Experiment:
    """The paper's Omniglot split: background drawers for training, evaluation alphabets for validation and test."""
    from siamese_jax.data.omniglot import load_omniglot, locate_runs

    dataset = load_omniglot(config.data_dir or None, config.cache_dir or None)
    runs_path = locate_runs(config.data_dir or None)
    t = config.train
    train_ids = dataset.select(t.set, t.alphabets, t.drawers)
    return Experiment(
        train_images=evaluation.omniglot_input(config)(dataset.images[train_ids]),
        train_groups=dataset.alphabet[train_ids],
        train_labels=dataset.character[train_ids],
        validator=evaluation.omniglot_validator(dataset, config, mesh),
        evaluate=lambda model, variables, mesh: evaluation.evaluate_all(
            model, variables, config, dataset, runs_path, mesh
        ),
        summarize=evaluation.format_table,
    )


def load_experiment(config, mesh: Mesh | None = None) -> Experiment:
    """The Experiment of config.dataset."""
    if dataset_name(config) == "lfw":
        from siamese_jax import faces

        return faces.lfw_experiment(config, mesh)
    return omniglot_experiment(config, mesh)
