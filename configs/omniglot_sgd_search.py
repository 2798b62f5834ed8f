"""The paper's search for configs/omniglot.py's per-layer SGD, sized for one GPU job.

    python -m siamese_jax.tune --config=configs/omniglot_sgd_search.py --workdir=runs/sgd_search \
        --storage=runs/sgd_search/study.log     # as many workers at once as the device holds
    benchmarks/gpu_job.sh DATA $OUT --job=tune  # 4 workers for 10 minutes on one GPU

configs/omniglot.py (the paper's network, pairs, distortions, momentum ramp and 1% decay a epoch)
with a search over eta_j, mu_j and lambda_j of its six layers in the paper's ranges
(config_files.paper_space), without the architecture: the CPU study of the same optimiser
(results/tune_omniglot_cpu_sgd.json) could not tell 18 values apart in 30 trials, so the filter
sizes and counts stay the paper's. Trials of 3 epochs; after the second, a trial below the median of
the others at the same epoch is stopped (after 4 that were not). best_config.py of the study is this
config with the winner's values, which train takes as it is.
"""

from siamese_jax.config_files import paper_space, sibling_config, tune_block

LAYERS = ("conv_0", "conv_1", "conv_2", "conv_3", "embed", "alpha")


def get_config():
    """The paper's experiment, searched for its per-layer SGD values."""
    config = sibling_config(__file__, "omniglot.py")
    config.tune = tune_block(paper_space(LAYERS), epochs=3, pruner="median", warmup_epochs=1, startup_trials=4,
                             trials=200)
    return config
