"""The paper's network, trained in minutes on one GPU: a faster recipe, same network, split and test.

    python -m siamese_jax.train --config=configs/omniglot_fast.py --workdir=runs/omniglot_fast

The network is configs/omniglot.py's, unchanged: four convolutions 64@10x10, 128@7x7, 128@4x4,
256@4x4 with max-pooling, the 4096-unit sigmoid embedding and the weighted L1 head on 105x105
input. The split, the evaluation and the augmentation's form are the paper's too. What departs
from the paper is how it is trained (README, "The fast recipe", says why for each):

- every within-alphabet pair of each group of the batch is scored (sampling='groups'), as in
  the CPU config: 8 alphabets x 8 characters x 4 drawers, 256 images and 3,968 pairs a step;
- all 20 background drawers instead of 12 (the evaluation alphabets stay unseen);
- Adam with a warm-up and a cosine decay instead of per-layer SGD with momentum;
- LeCun initialisation instead of the paper's N(0.5, 0.01) biases and N(0, 0.2) dense weights,
  which saturate the sigmoid at Adam's step sizes;
- 1,000 validation trials instead of 320, so that the best checkpoint is chosen on less noise;
- a training time limit, so the run ends in minutes whatever the device.
"""

import ml_collections

from siamese_jax.config_files import sibling_config, tune_block


def get_config():
    """The fast experiment."""
    config = sibling_config(__file__, "omniglot.py")
    config.model.init = "lecun"
    config.train.drawers = tuple(range(1, 21))
    config.validation.one_shot_trials = 1000

    config.sampling = "groups"
    config.batch_size = 256
    config.classes_per_group = 8
    config.images_per_class = 4
    config.balanced_loss = True

    config.optimizer = "adam"
    config.learning_rate = 1e-3
    config.lr_schedule = "cosine"
    config.warmup_epochs = 2
    config.weight_decay = 0.0
    config.l2 = ml_collections.ConfigDict({"*": 0.0})

    # 492 steps of 256 images an epoch; 40 epochs encode about 5M images.
    config.pairs_per_epoch = 1_950_000
    config.num_epochs = 40
    config.patience = 40  # The cosine schedule ends the run; the best checkpoint is kept anyway.
    config.max_train_seconds = 480
    config.checkpoint_every_steps = 2000
    # What python -m siamese_jax.tune searches for this recipe (Adam), in 10-epoch trials (docs/tuning.md).
    config.tune = tune_block((
        ("learning_rate", "log_float", 1e-4, 3e-3),
        ("model.dropout", "float", 0.0, 0.5),
        ("augment.probability", "float", 0.0, 1.0),
    ), epochs=10)
    return config
