"""The paper's search for configs/omniglot.py's per-layer SGD, sized for one GPU job.

    python -m siamese_jax.tune --config=configs/omniglot_sgd_search.py --workdir=runs/sgd_search \
        --storage=runs/sgd_search/study.log     # as many workers at once as the device holds
    benchmarks/gpu_job.sh DATA $OUT --job=tune  # 4 workers for 10 minutes on one GPU

configs/omniglot.py (the paper's network, pairs, distortions, a 2-epoch momentum ramp and 1% decay a epoch)
with the CPU study's space (config_files.grouped_sgd_space: one learning rate for the convolutions, one
each for the embedding and the head, one momentum and one L2 weight), without the architecture: the
first CPU study (results/tune_omniglot_cpu_sgd.json) could not tell 18 values apart in 30 trials.
Trials of 3 epochs, so the ramp ends within each; after the second, a trial below the median of the
others at the same epoch is stopped (after 4 that were not). best_config.py of the study is this config
with the winner's values, which train takes as it is.
"""

import ml_collections

from siamese_jax.config_files import grouped_sgd_space, sibling_config, tune_block


def get_config():
    """The paper's experiment, searched for its per-layer SGD values."""
    config = sibling_config(__file__, "omniglot.py")
    # The space's groups: '*' is every layer the others do not name.
    config.learning_rates = ml_collections.ConfigDict({"*": 1e-3, "embed": 1e-3, "alpha": 1e-3})
    config.momenta = ml_collections.ConfigDict({"*": 0.9})
    config.l2 = ml_collections.ConfigDict({"*": 2e-4})
    config.tune = tune_block(grouped_sgd_space(), epochs=3, pruner="median", warmup_epochs=1, startup_trials=4,
                             trials=200)
    return config
