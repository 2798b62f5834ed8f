"""The CPU config with the per-layer values of a study: configs/omniglot_cpu.py's recipe, one learning rate per
group of layers.

    python -m siamese_jax.train --config=configs/omniglot_cpu_sgd.py --workdir=runs/omniglot_cpu_sgd
    python -m siamese_jax.tune --config=configs/omniglot_cpu_sgd.py --workdir=runs/tune_cpu_sgd \
        --config.model.test_time_turns=1     # the study, as it ran

configs/omniglot_cpu.py (the CPU network, its length and scoring, the paper's update rule, 1% decay a epoch,
momentum rising from 0.5 over 2 epochs) with the winner of its tune block's study: one learning rate for the
convolutions and their norms ('*'), one each for the embedding and the head, one momentum and one L2 weight
(config_files.grouped_sgd_space), in 8-epoch trials under successive halving, starting from one learning rate and
momentum for every layer (results/omniglot_cpu_sgd_floor.json). The values below are trial 2 of 33 finished trials
(validation one-shot 70.8% at epoch 8 with one turn; one value for every layer: 68.8%); the study and this config's
full run (91.50%, validation 81.6%, within noise of one value's): results/omniglot_cpu_sgd.json.
"""

import ml_collections

from siamese_jax.config_files import sibling_config


def get_config():
    """The CPU experiment with per-layer SGD."""
    config = sibling_config(__file__, "omniglot_cpu.py")
    # The study's winner; '*' is every layer the others do not name (the convolutions and their group norms).
    config.learning_rates = ml_collections.ConfigDict(
        {"*": 0.17992599721070507, "embed": 0.08859299140928589, "alpha": 0.4152282084003059})
    config.momenta = ml_collections.ConfigDict({"*": 0.933648242225463})
    config.l2 = ml_collections.ConfigDict({"*": 3.417952912061007e-06})
    return config
