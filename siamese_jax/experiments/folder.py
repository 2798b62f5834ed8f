"""Your own class folders: each group's classes split into training, validation and test classes.

Training pairs, validation and the test's N-way K-shot tasks all stay within a group (a folder
one level above the classes, like Omniglot's alphabets), or within the whole dataset when the
classes are not grouped.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import numpy as np
from jax.sharding import Mesh

from siamese_jax.evaluation import evaluators, scoring
from siamese_jax.data import folders
from siamese_jax.data import images as image_files
from siamese_jax.errors import ConfigError, DataError
from siamese_jax.experiments import base
from siamese_jax.tasks import random_trials


@contextlib.contextmanager
def _split_hint(split: str):
    """Adds to a too-small-split DataError what to change."""
    try:
        yield
    except DataError as error:
        raise DataError(f"the {split} classes: {error} (the tasks stay within a group): lower config.{split}.way, "
                        f"or give the {split} split a larger fraction of each group's classes (config.folder.split)"
                        ) from None


class Experiment(base.Experiment):
    """Training on the training classes of config.folder.path; tests on its held-out classes."""

    @property
    def input_style(self) -> str:
        """config.folder.style: 'strokes' or 'photo'."""
        return self.config.folder.style

    def check_config(self) -> None:
        """The folder exists, the style and split fractions are valid."""
        f = self.config.folder
        if not f.path:
            raise ConfigError("config.folder.path is empty: set it to your dataset folder (--config.folder.path=DIR)")
        if not Path(f.path).expanduser().is_dir():
            raise DataError(f"dataset folder {f.path} does not exist or is not a folder (config.folder.path)")
        folders.check_settings(f.style, self.config.channels, f.split)

    @functools.cached_property
    def loaded(self) -> tuple[folders.ImageFolder, dict[str, np.ndarray]]:
        """The image folder and its class split."""
        f = self.config.folder
        dataset = folders.load_image_folder(f.path, f.style, self.config.image_size, self.config.channels,
                                            self.config.cache_dir or None)
        return dataset, folders.split_classes(dataset, f.split, f.split_seed)

    def split(self, name: str) -> evaluators.Split:
        """The images of the 'train', 'validation' or 'test' classes."""
        dataset, splits = self.loaded
        return evaluators.Split(dataset.images, dataset.group, dataset.label, splits[name])

    def training_set(self) -> base.TrainingSet:
        """The training classes' images."""
        dataset, splits = self.loaded
        ids = splits["train"]
        return base.TrainingSet(dataset.images[ids], dataset.group[ids], dataset.label[ids])

    def validation_split(self) -> evaluators.Split:
        """The validation classes."""
        return self.split("validation")

    def validation(self, mesh: Mesh | None = None) -> evaluators.Validation:
        """The validation evaluators, with advice when the validation split is too small for them."""
        with _split_hint("validation"):
            return super().validation(mesh)

    def evaluate(self, model, variables: dict, mesh: Mesh | None = None) -> dict:
        """Random within-group N-way K-shot tasks on the test classes, and the validation scores."""
        dataset, splits = self.loaded
        t = self.config.test
        test = self.split("test")
        with _split_hint("test"):
            tasks = random_trials(test.indices, test.groups, test.labels, t.way, t.shots, t.tasks, t.seed)
        return {
            "folder": {"path": dataset.root, "classes": {name: int(len(np.unique(dataset.label[ids])))
                                                         for name, ids in splits.items()}},
            "test_tasks": {"way": t.way, "shots": t.shots, **scoring.evaluate_one_shot(
                model, variables, scoring.make_eval_set(dataset.images, tasks), self.config.eval_batch_size,
                mesh=mesh)},
            "validation": self.validation(mesh)(model, variables, with_sizes=True),
        }

    def summarize(self, result: dict) -> str:
        """The classes of each split, the test tasks and validation."""
        v, c = result["validation"], result["folder"]["classes"]
        lines = [
            f"{result['folder']['path']}: {c['train']} training, {c['validation']} validation, {c['test']} test classes",
            self.headline(result),
        ]
        return "\n".join(lines + [evaluators.validation_line(v)])

    def headline(self, result: dict) -> str:
        """The test tasks' accuracy with its interval."""
        t = result["test_tasks"]
        lo, hi = t["ci95"]
        return (f"test: {t['way']}-way {t['shots']}-shot tasks: {100 * t['accuracy']:.2f}% over {t['trials']} "
                f"(95% CI {100 * lo:.1f}-{100 * hi:.1f})")

    def image_converter(self):
        """Any image -> strokes (style 'strokes') or a centre-cropped photo (style 'photo')."""
        size, channels = self.config.image_size, self.config.channels
        if self.config.folder.style == "photo":
            return lambda path: image_files.photo_input(image_files.read_image_file(path), str(path), size, channels)
        return lambda path: image_files.strokes_input(image_files.read_image_file(path), str(path), size)
