"""What training needs from a dataset: its training images and labels, a validator, the final report."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable

import numpy as np
from jax.sharding import Mesh

from siamese_jax import evaluation
from siamese_jax.errors import ConfigError, DataError
from siamese_jax.tasks import random_trials

DATASETS = ("omniglot", "lfw", "folder")


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


def load_folder(config):
    """The image folder of a 'folder' config and its class split."""
    from siamese_jax.data import folders

    f = config.folder
    if not f.path:
        raise ConfigError("config.folder.path is empty: set it to your dataset folder (--config.folder.path=DIR)")
    dataset = folders.load_image_folder(f.path, f.style, config.image_size, config.get("channels", 1),
                                        config.cache_dir or None)
    return dataset, folders.split_classes(dataset, f.split, f.split_seed)


def evaluate_folder(model, variables: dict, config, dataset, splits: dict, mesh: Mesh | None = None) -> dict:
    """Random within-group N-way K-shot tasks on the test classes, and the validation scores."""
    t = config.test
    with _split_hint("test"):
        tasks = random_trials(splits["test"], dataset.group, dataset.label, t.way, t.shots, t.tasks, t.seed)
    return {
        "folder": {"path": dataset.root, "classes": {name: int(len(np.unique(dataset.label[ids])))
                                                     for name, ids in splits.items()}},
        "test_tasks": {"way": t.way, "shots": t.shots, **evaluation.evaluate_one_shot(
            model, variables, evaluation.make_eval_set(dataset.images, tasks), config.eval_batch_size, mesh=mesh)},
        "validation": folder_validator(config, dataset, splits, mesh)(model, variables),
    }


@contextlib.contextmanager
def _split_hint(split: str):
    """Adds to a too-small-split DataError what to change."""
    try:
        yield
    except DataError as error:
        raise DataError(f"the {split} classes: {error} (the tasks stay within a group): lower config.{split}.way, "
                        f"or give the {split} split a larger fraction of each group's classes (config.folder.split)"
                        ) from None


def folder_validator(config, dataset, splits: dict, mesh: Mesh | None) -> evaluation.Validator:
    """Fixed validation trials and pairs among the validation classes."""
    with _split_hint("validation"):
        eval_set = evaluation.validation_set(dataset.images, dataset.group, dataset.label, splits["validation"],
                                             config.validation)
    return evaluation.Validator(eval_set, config.eval_batch_size, mesh)


def format_folder(result: dict) -> str:
    """A human-readable summary of evaluate_folder's result."""
    t, v, c = result["test_tasks"], result["validation"], result["folder"]["classes"]
    lo, hi = t["ci95"]
    return "\n".join([
        f"{result['folder']['path']}: {c['train']} training, {c['validation']} validation, {c['test']} test classes",
        f"test: {t['way']}-way {t['shots']}-shot tasks: {100 * t['accuracy']:.2f}% over {t['trials']} "
        f"(95% CI {100 * lo:.1f}-{100 * hi:.1f})",
        f"validation: one-shot {100 * v['one_shot_accuracy']:.2f}% ({v['one_shot_trials']} trials), "
        f"verification AUC {v['verification_auc']:.4f}",
    ])


def folder_experiment(config, mesh: Mesh | None) -> Experiment:
    """Training on the train classes of your own class folders; tests on the held-out classes."""
    dataset, splits = load_folder(config)
    train_ids = splits["train"]
    return Experiment(
        train_images=dataset.images[train_ids],
        train_groups=dataset.group[train_ids],
        train_labels=dataset.label[train_ids],
        validator=folder_validator(config, dataset, splits, mesh),
        evaluate=lambda model, variables, mesh: evaluate_folder(model, variables, config, dataset, splits, mesh),
        summarize=format_folder,
    )


def load_experiment(config, mesh: Mesh | None = None) -> Experiment:
    """The Experiment of config.dataset."""
    name = dataset_name(config)
    if name == "lfw":
        from siamese_jax import faces

        return faces.lfw_experiment(config, mesh)
    if name == "folder":
        return folder_experiment(config, mesh)
    return omniglot_experiment(config, mesh)
