"""The CPU config at another learning rate: configs/omniglot_cpu.py, one learning rate for every layer.

    python -m siamese_jax.train --config=configs/omniglot_cpu_sgd_floor.py:0.3 --workdir=runs/sgd_floor_0.3

The argument after ':' is the learning rate (default 0.1, configs/omniglot_cpu.py's own). The floor its study
started from, run at 0.1 and 0.3 before configs/omniglot_cpu.py took 0.1: results/omniglot_cpu_sgd_floor.json.
"""

import ml_collections

from siamese_jax.config_files import sibling_config


def get_config(learning_rate="0.1"):
    """The CPU experiment with one-rate SGD at `learning_rate`."""
    config = sibling_config(__file__, "omniglot_cpu.py")
    config.learning_rates = ml_collections.ConfigDict({name: float(learning_rate) for name in config.learning_rates})
    del config["tune"]  # Searching from here is configs/omniglot_cpu.py's study.
    return config
