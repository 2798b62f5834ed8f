"""The CPU network trained with the paper's optimiser: per-layer SGD, the momentum ramp, 1% decay a epoch.

    python -m siamese_jax.train --config=configs/omniglot_cpu_sgd.py --workdir=runs/omniglot_cpu_sgd
    python -m siamese_jax.tune --config=configs/omniglot_cpu_sgd.py --workdir=runs/tune_cpu_sgd \
        --config.model.test_time_turns=1     # the study, as it ran

configs/omniglot_cpu.py's network, data, turned alphabets, length and scoring (four test-time turns), with the
paper's update rule (optim.paper_momentum, docs/omniglot.md "The paper's optimiser") in place of Adam: learning
rates decaying 1% a epoch, momentum rising from 0.5 to mu_j over 2 epochs. Its tune block searches one learning
rate for the convolutions and their norms ('*'), one each for the embedding and the head, one momentum and one
L2 weight (config_files.grouped_sgd_space), in 8-epoch trials under successive halving, starting from the
floor (one learning rate and momentum for every layer, results/omniglot_cpu_sgd_floor.json). The values below
are its winner, trial 2 of 33 finished trials (validation one-shot 70.8% at epoch 8 with one turn; the floor's 68.8%);
the study and this config's full run: results/omniglot_cpu_sgd.json.
"""

import ml_collections

from siamese_jax.config_files import grouped_sgd_space, sibling_config, tune_block


def get_config():
    """The CPU experiment with per-layer SGD."""
    config = sibling_config(__file__, "omniglot_cpu.py")
    config.optimizer = "sgd_paper"
    config.lr_schedule = "exponential"
    config.lr_decay = 0.99
    config.warmup_epochs = 0.0
    config.momentum_start = 0.5
    config.momentum_ramp_epochs = 2
    # The study's winner; '*' is every layer the others do not name (the convolutions and their group norms).
    config.learning_rates = ml_collections.ConfigDict(
        {"*": 0.17992599721070507, "embed": 0.08859299140928589, "alpha": 0.4152282084003059})
    config.momenta = ml_collections.ConfigDict({"*": 0.933648242225463})
    config.l2 = ml_collections.ConfigDict({"*": 3.417952912061007e-06})
    config.tune = tune_block(grouped_sgd_space(), epochs=8, trials=100, pruner="successive_halving",
                             startup_trials=6, warmup_epochs=2)
    return config
