"""Faces: the siamese network on Labeled Faces in the Wild, View 1 (GPU scale).

    python -m siamese_jax.train --config=configs/lfw.py --workdir=runs/lfw
    python -m siamese_jax.evaluate --workdir=runs/lfw --protocol=view2    # View 2, thresholds only

View 2 in the strict setting trains one model per fold (K = 0..9), then combines them, all in one
command that resumes where it stopped:

    python -m siamese_jax.lfw_view2 --config=configs/lfw.py --workdir=runs/lfw_view2

The paper's encoder at 105x105 grayscale, with batch normalisation, a unit-length embedding and a
Euclidean head trained with the contrastive loss plus a ranking loss; set model.head='l1',
model.embedding='sigmoid', loss='cross_entropy' and ranking_loss_weight=0 for the paper's head and loss.
"""

import ml_collections


def get_config():
    """LFW View 1 with the contrastive and ranking losses."""
    config = ml_collections.ConfigDict()
    config.dataset = "lfw"
    config.seed = 0
    # Two or more seeds: train a run for each and score them as one model (siamese_jax/ensemble.py).
    config.ensemble_seeds = ()
    config.data_dir = ""  # '' means $SIAMESE_JAX_DATA_DIR, else a download with tensorflow-datasets.
    config.cache_dir = ""  # '' means ~/.cache/siamese_jax
    config.image_size = 105
    config.channels = 1  # 1: grayscale; 3: RGB.
    config.lfw = ml_collections.ConfigDict(dict(
        protocol="view1",  # 'view1': train on peopleDevTrain; 'view2': train without fold `fold` of people.txt.
        fold=0,
        crop=150,  # Side of the centred square kept from the 250x250 photo: the face and little background.
        # Other centred crops (sides in pixels) that verification also embeds each photo at, averaging the
        # embeddings (thresholds, View 1, View 2; not training, validation or identification).
        test_crops=(),
        # Training people with two or more images held out for validation (early stopping, threshold).
        validation_fraction=0.1,
        split_seed=0,
        # Where the same/different threshold comes from, training-side data only either way: 'validation',
        # the validation pairs (held-out training people, whose distances are those of unseen people), or
        # 'protocol', pairsDevTrain / the other nine folds' pairs, whose people the model trained on: it
        # pulls their same pairs closer than an unseen person's, and the threshold comes out too strict.
        threshold="validation",
        # Adaptive score normalisation (AS-norm) of every verification score against `images` photos of
        # training people, each photo's `top` best scores among them (evaluation.adaptive_score_norm); 0: off.
        cohort_norm=ml_collections.ConfigDict(dict(images=3000, top=200, seed=3)),
        # N-way one-shot identification among people never trained on, for each N of `ways`,
        # reported after training.
        identification=ml_collections.ConfigDict(dict(ways=(5, 10, 50), tasks=1000, seed=2)),
    ))
    config.validation = ml_collections.ConfigDict(dict(
        way=20, one_shot_trials=500, verification_pairs=2000, seed=1, evals=("verification", "one_shot"),
        metric="verification_auc",
    ))

    config.model = ml_collections.ConfigDict(dict(
        features=(64, 128, 128, 256), kernel_sizes=(10, 7, 4, 4), embedding_dim=256, padding="VALID",
        init="lecun", norm="batch", embedding="normalize", head="euclidean", margin=1.0, dropout=0.0, dtype="auto",
        first_layer_as_matmul=False,
        # At evaluation, embed each face and its mirror image and average the two (models.SiameseNet.embed):
        # View 1 accuracy 80.3% -> 81.0% for configs/lfw_cpu.py's trained model, at twice the encoding cost.
        test_time_flip=True,
        test_time_turns=1,  # A face is upright: no test-time turns.
    ))
    config.loss = "contrastive"

    # 'groups': each group is classes_per_group people x images_per_class photos, and every pair
    # inside a group is scored (LFW has no alphabets: groups draw from all training people). Here
    # one group of 64 people: 8,128 pairs per step, each photo against 126 other people's.
    config.sampling = "groups"
    config.batch_size = 128
    config.classes_per_group = 64
    config.images_per_class = 2
    config.balanced_loss = True
    config.orientations = 1  # Faces are not turned: a turned face is the same person.
    # Added to the contrastive loss: a softmax over each photo's 127 partners of picking its own
    # person's other photo (losses.ranking_loss), with logits scaled by ranking_loss_scale (an
    # inverse temperature: the Euclidean head's logits margin/2 - d span only 2 units). Chosen on
    # configs/lfw_cpu.py's validation AUC (results/lfw_cpu_recipe_sweep.json): 0.914 without it, 0.953 with it.
    config.ranking_loss_weight = 1.0
    config.ranking_loss_scale = 32.0

    config.augment = ml_collections.ConfigDict(dict(
        enabled=True, probability=0.5, rotation=10.0, shear=0.1, scale=(0.9, 1.1), translation=5.0, flip=0.5,
    ))

    config.optimizer = "adam"  # Or 'sgd_paper', with learning_rates, momenta and l2 per layer.
    config.learning_rate = 1e-3
    config.lr_decay = 0.95
    config.l2 = ml_collections.ConfigDict({"*": 0.0})
    # The learning rates' schedule: 'exponential' (x lr_decay per epoch, the paper's) or 'cosine'
    # (linear warm-up over warmup_epochs, then a half cosine to 0 at the last epoch).
    config.lr_schedule = "exponential"
    config.warmup_epochs = 0.0
    config.weight_decay = 0.0  # Decoupled weight decay on the kernels (AdamW); only for 'adam'.

    config.pairs_per_epoch = 812_800  # 100 steps of 8,128 pairs.
    config.num_epochs = 40
    config.patience = 8

    config.max_train_seconds = 0.0  # Stop before an epoch that would end past this many seconds; 0: no limit.
    config.on_nonfinite = "stop"  # Or 'skip' the update of a step whose loss is not finite.

    config.steps_per_dispatch = 1
    config.log_every_steps = 20
    config.checkpoint_every_steps = 500
    config.eval_batch_size = 256
    return config
