"""Datasets as experiments found by name from config.dataset (see base.py)."""

from siamese_jax.experiments.base import DATASETS, Experiment, TrainingSet, build, dataset_name, experiment_class

__all__ = ["DATASETS", "Experiment", "TrainingSet", "build", "dataset_name", "experiment_class"]
