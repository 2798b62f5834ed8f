"""What a dataset brings to training and evaluation, and the registry that finds it by config.dataset.

Each dataset is one module of this package defining `Experiment`, a subclass of `Experiment`
below, and one name in DATASETS. train, evaluate, predict and report look the experiment up once
and never name a dataset. Adding one (BUILD.md, "Adding a dataset"): a module here, a line in
DATASETS, a config.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Callable

import numpy as np
from jax.sharding import Mesh

from siamese_jax.evaluation import evaluators
from siamese_jax.errors import ConfigError, UserError

# config.dataset -> module siamese_jax.experiments.<name>.
DATASETS = ("omniglot", "lfw", "folder")


@dataclasses.dataclass(frozen=True)
class TrainingSet:
    """The images training samples pairs from."""

    images: np.ndarray  # uint8 model input [N, S, S(, C)]
    groups: np.ndarray  # int [N]: different pairs are drawn within one group (an alphabet)
    labels: np.ndarray  # int [N]: the class (character, person) of each image


@dataclasses.dataclass(frozen=True)
class SupportSet:
    """A ready-made one-shot task: one model-input image per class, and real queries whose class is known."""

    names: tuple[str, ...]  # one per class
    images: np.ndarray  # uint8 model input [N, S, S(, C)], one image per class
    queries: np.ndarray  # uint8 model input [Q, S, S(, C)]
    answers: np.ndarray  # int [Q]: each query's class, an index into names


class Experiment:
    """A dataset's part of a run. Built from the config without reading data; data loads on first use.

    Subclasses set `options` (the evaluate command's dataset-specific flags they take) and
    implement the methods that raise NotImplementedError.
    """

    # Flags of `python -m siamese_jax.evaluate` this dataset understands, e.g. ('runs', 'mnist').
    options: tuple[str, ...] = ()
    # What its images are: 'strokes' (drawn symbols: the demo offers a sketchpad) or 'photo'.
    input_style = "photo"

    def __init__(self, config):
        self.config = config
        self.check_config()

    def check_config(self) -> None:
        """Rejects the dataset's config values that cannot work, before any data is read."""

    def training_set(self) -> TrainingSet:
        """The training images with their groups and classes."""
        raise NotImplementedError

    def validation_split(self) -> evaluators.Split:
        """The images validation tasks are drawn from (never trained on)."""
        raise NotImplementedError

    def validation(self, mesh: Mesh | None = None) -> evaluators.Validation:
        """The validation evaluators config.validation.evals names, on this dataset's validation split."""
        return evaluators.Validation(self.config.validation, self.validation_split(), self.config.eval_batch_size, mesh)

    def evaluate(self, model, variables: dict, mesh: Mesh | None = None, **options) -> dict:
        """The full report of a trained model (what eval.json holds), with `options` from the evaluate command."""
        raise NotImplementedError

    def summarize(self, result: dict) -> str:
        """The report as lines of text."""
        raise NotImplementedError

    def headline(self, result: dict) -> str:
        """The report's main result in one line (a packed model's card, the demo's page): by default, validation."""
        return evaluators.validation_line(result["validation"])

    def image_converter(self) -> Callable[[Path], np.ndarray]:
        """Path of any image file -> uint8 model input, prepared the way the training images were."""
        raise NotImplementedError

    def verification_threshold(self, report: dict) -> float | None:
        """The same/different threshold on pair logits that an evaluation report (eval.json) chose; None
        when this dataset's evaluation chooses none."""
        del report
        return None

    def report_figures(self, workdir: str, restore: Callable[[], tuple], out: Path, **options) -> list[Path]:
        """Figures beyond the training curves (report command) in `out`; none by default.

        `restore()` gives the (model, variables) of the checkpoint to show, loaded only if needed.
        """
        del workdir, restore, out, options
        return []

    def support_sets(self) -> dict[str, Callable[[], SupportSet]]:
        """Named ready-made one-shot tasks a user can classify against (e.g. Omniglot's official runs), each
        built when first asked for; none by default."""
        return {}

    def check_options(self, options: dict) -> None:
        """Rejects evaluate flags this dataset does not take."""
        foreign = sorted(set(options) - set(self.options))
        if foreign:
            raise UserError(f"--{', --'.join(foreign)} do(es) not apply to {self.config.dataset} "
                            f"runs (their options: {', '.join('--' + o for o in self.options) or 'none'})")


def dataset_name(config) -> str:
    """config.dataset, checked."""
    name = config.dataset
    if name not in DATASETS:
        raise ConfigError(f"config.dataset must be one of {DATASETS}, got {name!r}")
    return name


def experiment_class(config) -> type[Experiment]:
    """The Experiment class of config.dataset (its module is imported on first use)."""
    return importlib.import_module(f"siamese_jax.experiments.{dataset_name(config)}").Experiment


def build(config) -> Experiment:
    """The Experiment of config.dataset, its config section checked; no data is read yet."""
    return experiment_class(config)(config)
