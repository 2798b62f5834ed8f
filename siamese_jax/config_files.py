"""Experiment configs: loading a config file by path (configs are files, not a package), and upgrading
a config written before some of its entries existed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import ml_collections

# Entries added to the configs after runs had been saved with them missing: dotted key -> the value
# that does what those runs did. upgrade_config fills these in; nothing else in the package
# supplies a default for a config key.
DEFAULTS = {
    "dataset": "omniglot",
    "channels": 1,
    "loss": "cross_entropy",
    "ranking_loss_weight": 0.0,
    "ranking_loss_scale": 1.0,
    "lr_schedule": "exponential",
    "warmup_epochs": 0.0,
    "weight_decay": 0.0,
    "max_train_seconds": 0.0,
    "on_nonfinite": "stop",
    "orientations": 1,
    "ensemble_seeds": (),
    "model.embedding": "sigmoid",
    "model.head": "l1",
    "model.margin": 1.0,
    "model.dropout": 0.0,
    "model.first_layer_as_matmul": False,
    "model.test_time_flip": False,
    "model.test_time_turns": 1,
    "augment.flip": 0.0,
    "validation.evals": ("verification", "one_shot"),
    "validation.metric": "one_shot_accuracy",
}
# Entries of one dataset's own sections, filled only in that dataset's configs.
DATASET_DEFAULTS = {
    "omniglot": {"test.mnist_tasks": 0},
    "lfw": {
        "lfw.threshold": "protocol",
        "lfw.cohort_norm.images": 0,  # AS-norm off; top and seed as configs/lfw.py has them.
        "lfw.cohort_norm.top": 200,
        "lfw.cohort_norm.seed": 3,
        "lfw.test_crops": (),
    },
}
# Old key -> new key, for entries that were renamed.
RENAMED = {"classes_per_alphabet": "classes_per_group"}


def load_config_file(path) -> object:
    """get_config() of the config file at `path`."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(f"siamese_jax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def sibling_config(config_file, name: str) -> object:
    """get_config() of configs/<name> beside `config_file` (a config's __file__): for variants of one experiment."""
    return load_config_file(Path(config_file).with_name(name))


def _fill(config: ml_collections.ConfigDict, dotted: str, value) -> None:
    """Sets config[dotted] to `value` unless it is there, creating missing sections."""
    *sections, name = dotted.split(".")
    for part in sections:
        if part not in config:
            config[part] = ml_collections.ConfigDict()
        config = config[part]
    if name not in config:
        config[name] = value


def upgrade_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` (changed in place, and returned) with the entries that older configs lack and the
    renamed entries under their new names, so that the rest of the package reads every key directly."""
    with config.unlocked():
        for old, new in RENAMED.items():
            if old in config:
                if new not in config:
                    config[new] = config[old]
                del config[old]
        for dotted, value in DEFAULTS.items():
            _fill(config, dotted, value)
        for dotted, value in DATASET_DEFAULTS.get(config.dataset, {}).items():
            if dotted.split(".")[0] in config:
                _fill(config, dotted, value)
        if config.dataset == "lfw" and "ways" not in config.lfw.identification:
            # Configs saved before several ways were reported had one, `way`.
            config.lfw.identification.ways = (config.lfw.identification.way,)
    return config


def tune_block(space, **settings) -> ml_collections.ConfigDict:
    """A config's `tune` section (siamese_jax.tune, docs/tuning.md): the search space and how to search it."""
    block = ml_collections.ConfigDict(dict(
        space=tuple(tuple(entry) for entry in space),
        metric="",  # '': config.validation.metric.
        pruner="median",  # 'median', 'successive_halving' or 'none'.
        startup_trials=5,  # Trials the sampler draws at random, and the median pruner lets finish, first.
        warmup_epochs=2,  # Epochs a trial always trains before the pruner may stop it.
        epochs=0,  # Epochs a trial trains (0: config.num_epochs).
        trials=30,  # The study's trials in all (tune --trials overrides).
        seed=0,  # The TPE sampler's.
    ))
    block.update(settings)
    return block


def paper_space(layers, convolutions: int = 0, momentum_start: float = 0.5) -> tuple:
    """Koch et al.'s search ranges (section 3.2, "Learning", under "Hyperparameter optimization") for
    per-layer SGD over `layers` and, for `convolutions` > 0, the architecture of that many convolutions.

    Each layer's learning rate eta_j in [1e-4, 1e-1] (searched on a log scale), momentum mu_j in the paper's
    [0, 1] less what its own schedule rules out (momentum rises from `momentum_start` to mu_j: [momentum_start,
    0.99]), and L2 weight lambda_j in (0, 0.1] on a log scale from 1e-7 (the paper's [0, 0.1] drawn uniformly
    puts nearly every draw near 0.1, where the loss, a mean over the batch here, is mostly the penalty);
    filter sizes 3x3 to 20x20, 16 to 256 filters in multiples of 16, and 128 to 4096 units in the fully
    connected layer, in multiples of 16.
    """
    space = [entry for layer in layers for entry in (
        (f"learning_rates.{layer}", "log_float", 1e-4, 1e-1),
        (f"momenta.{layer}", "float", momentum_start, 0.99),
        (f"l2.{layer}", "log_float", 1e-7, 0.1),
    )]
    for i in range(convolutions):
        space += [(f"model.kernel_sizes.{i}", "int", 3, 20, 1), (f"model.features.{i}", "int", 16, 256, 16)]
    if convolutions:
        space.append(("model.embedding_dim", "int", 128, 4096, 16))
    return tuple(space)


def grouped_sgd_space() -> tuple:
    """A search of the paper's per-layer SGD with values shared where 30 trials cannot tell layers apart: one
    learning rate for the convolutions (and their norms), one each for the embedding and the head, one
    momentum and one L2 weight (log scale, from about none) for every layer (docs/tuning.md)."""
    return (
        ("learning_rates.*", "log_float", 0.02, 0.6),
        ("learning_rates.embed", "log_float", 0.02, 0.6),
        ("learning_rates.alpha", "log_float", 0.02, 0.6),
        ("momenta.*", "float", 0.5, 0.95),
        ("l2.*", "log_float", 1e-7, 1e-3),
    )
