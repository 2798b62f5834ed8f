"""The CPU config: a small variant of the paper that trains on a 2-core CPU in about 16 minutes.

    python -m siamese_jax.train --config=configs/omniglot_cpu.py --workdir=runs/omniglot_cpu
    python -m siamese_jax.tune --config=configs/omniglot_cpu.py --workdir=runs/tune_cpu   # its search space

configs/omniglot_cpu_adam.py's network, data, turned alphabets, length (36 epochs) and scoring (four test-time
turns), trained with the paper's optimiser (optim.paper_momentum, docs/omniglot.md "The paper's optimiser"):
momentum SGD with one learning rate for every layer, decaying 1% a epoch, momentum rising from 0.5 to 0.9 over
2 epochs, no L2. Chosen on validation: one-shot 82.0% and 81.5% (seeds 0 and 1) against Adam's 76.0-76.5% at the
same length; on the official runs 93.25% and 94.00% against Adam's 90.00% (results/omniglot_cpu_sgd_floor.json).
Retrained from this file, the model shipped with the package: results/pretrained_omniglot_cpu.json.
"""

import ml_collections

from siamese_jax.config_files import grouped_sgd_space, sibling_config, tune_block


def get_config():
    """The CPU experiment."""
    config = sibling_config(__file__, "omniglot_cpu_adam.py")
    config.optimizer = "sgd_paper"
    config.lr_schedule = "exponential"
    config.lr_decay = 0.99
    config.warmup_epochs = 0.0
    config.momentum_start = 0.5
    config.momentum_ramp_epochs = 2
    # One value for every layer, named per group as the tune block searches them: '*' (the convolutions and their
    # norms), the embedding and the head. A 33-trial study of one rate per group (configs/omniglot_cpu_sgd.py)
    # found nothing better on validation than one value (results/omniglot_cpu_sgd.json).
    config.learning_rates = ml_collections.ConfigDict({"*": 0.1, "embed": 0.1, "alpha": 0.1})
    config.momenta = ml_collections.ConfigDict({"*": 0.9})
    config.l2 = ml_collections.ConfigDict({"*": 0.0})
    # What python -m siamese_jax.tune searches from here: one learning rate for the convolutions and their norms
    # ('*'), one each for the embedding and the head, one momentum and one L2 weight, in 8-epoch trials under
    # successive halving (docs/tuning.md).
    config.tune = tune_block(grouped_sgd_space(), epochs=8, trials=100, pruner="successive_halving",
                             startup_trials=6, warmup_epochs=2)
    return config
