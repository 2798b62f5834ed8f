"""The floor for the paper's optimiser: plain SGD with momentum 0.9 and one learning rate for every layer.

    python -m siamese_jax.train --config=configs/omniglot_cpu_sgd_floor.py:0.1 --workdir=runs/sgd_floor_0.1

configs/omniglot_cpu.py's network, data, length and scoring (four test-time turns), with the paper's update
rule (optim.paper_momentum), its 1% decay a epoch, momentum ramped from 0.5 to 0.9 over 2 epochs, no L2.
The argument after ':' is the learning rate (default 0.1).
"""

import ml_collections

from siamese_jax.config_files import sibling_config


def get_config(learning_rate="0.1"):
    """The CPU experiment with one-rate SGD."""
    config = sibling_config(__file__, "omniglot_cpu.py")
    config.optimizer = "sgd_paper"
    config.lr_schedule = "exponential"
    config.lr_decay = 0.99
    config.warmup_epochs = 0.0
    config.momentum_start = 0.5
    config.momentum_ramp_epochs = 2
    config.learning_rates = ml_collections.ConfigDict({"*": float(learning_rate)})
    config.momenta = ml_collections.ConfigDict({"*": 0.9})
    config.l2 = ml_collections.ConfigDict({"*": 0.0})
    del config["tune"]  # omniglot_cpu.py's searches Adam's learning rate; configs/omniglot_cpu_sgd.py searches this one.
    return config
