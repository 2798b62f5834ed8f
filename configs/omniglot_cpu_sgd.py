"""The CPU network trained with the paper's optimiser: per-layer SGD, the momentum ramp, 1% decay a epoch.

    python -m siamese_jax.tune --config=configs/omniglot_cpu_sgd.py --workdir=runs/tune_cpu_sgd
    python -m siamese_jax.train --config=configs/omniglot_cpu_sgd.py --workdir=runs/omniglot_cpu_sgd

configs/omniglot_cpu.py's network, data, turned alphabets and length, with configs/omniglot.py's
optimiser in place of Adam: eta_j, mu_j, lambda_j for each layer (the group norms share the '*' value).
Its tune block searches the paper's ranges for those values (docs/tuning.md). The values below are the
starting point of configs/omniglot.py, not yet a study's winner.
"""

import ml_collections

from siamese_jax.config_files import paper_space, sibling_config, tune_block

LAYERS = ("conv_0", "conv_1", "conv_2", "conv_3", "embed", "alpha")


def get_config():
    """The CPU experiment with per-layer SGD."""
    config = sibling_config(__file__, "omniglot_cpu.py")
    paper = sibling_config(__file__, "omniglot.py")
    config.optimizer = "sgd_paper"
    config.lr_schedule = "exponential"
    config.lr_decay = paper.lr_decay
    config.warmup_epochs = 0.0
    config.momentum_start = paper.momentum_start
    config.momentum_ramp_epochs = paper.momentum_ramp_epochs
    config.learning_rates = ml_collections.ConfigDict({"*": 1e-2, **{layer: 1e-2 for layer in LAYERS}})
    config.momenta = ml_collections.ConfigDict({"*": 0.9, **{layer: 0.9 for layer in LAYERS}})
    config.l2 = ml_collections.ConfigDict({"*": 0.0, **{layer: 2e-4 for layer in LAYERS}})
    # Short trials: the pruner compares them epoch by epoch on validation one-shot accuracy.
    config.tune = tune_block(paper_space(LAYERS), epochs=8, trials=30)
    return config

