"""The floor for the paper's optimiser: one learning rate for every layer, momentum 0.9, no L2.

    python -m siamese_jax.train --config=configs/omniglot_cpu_sgd_floor.py:0.1 --workdir=runs/sgd_floor_0.1

configs/omniglot_cpu_sgd.py (the CPU network, its length and scoring, the paper's update rule, 1% decay a
epoch, momentum ramped from 0.5 over 2 epochs) with one value for every layer in place of its study's. The
argument after ':' is the learning rate (default 0.1). Record: results/omniglot_cpu_sgd_floor.json.
"""

import ml_collections

from siamese_jax.config_files import sibling_config


def get_config(learning_rate="0.1"):
    """The CPU experiment with one-rate SGD."""
    config = sibling_config(__file__, "omniglot_cpu_sgd.py")
    config.learning_rates = ml_collections.ConfigDict({"*": float(learning_rate)})
    config.momenta = ml_collections.ConfigDict({"*": 0.9})
    config.l2 = ml_collections.ConfigDict({"*": 0.0})
    del config["tune"]  # Searching from here is configs/omniglot_cpu_sgd.py's study.
    return config
