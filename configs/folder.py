"""Your own dataset: a folder with one subfolder of images per class (optionally grouped one level up).

    python -m siamese_jax.train --config=configs/folder.py --config.folder.path=MY_DATA --workdir=runs/mine
    python -m siamese_jax.evaluate --workdir=runs/mine [--way=5 --shots=1 --tasks=1000]

MY_DATA/<class>/<image> or MY_DATA/<group>/<class>/<image>. Each group's classes are split into
training, validation and test classes (config.folder.split); training pairs, validation and test
tasks stay within a group, as Omniglot's stay within an alphabet. The model, augmentation and
optimiser are those of configs/omniglot_cpu_adam.py (a 2-core CPU in minutes for a few thousand
images); set config.folder.style='photo' and config.channels=3 for colour photos.
"""

import ml_collections

from siamese_jax.config_files import sibling_config


def get_config():
    """Your own class folders, with the CPU Omniglot model."""
    config = sibling_config(__file__, "omniglot_cpu_adam.py")
    config.dataset = "folder"
    config.channels = 1  # 3 for RGB photos (style 'photo').
    config.folder = ml_collections.ConfigDict(dict(
        path="",  # Your dataset folder (required).
        style="strokes",  # 'strokes': drawn symbols, ink on a plain background; 'photo': centre square.
        split=(0.7, 0.15, 0.15),  # Fractions of each group's classes for training, validation, test.
        split_seed=0,
    ))
    for unused in ("train", "test"):
        del config[unused]
    config.validation = ml_collections.ConfigDict(dict(way=5, one_shot_trials=500, verification_pairs=2000, seed=1,
                                                       evals=("verification", "one_shot"), metric="one_shot_accuracy"))
    config.test = ml_collections.ConfigDict(dict(way=5, shots=1, tasks=1000, seed=2))
    # Groups of 4 classes x 2 images: every class needs 2 images, every training group 4 classes.
    config.classes_per_group = 4
    config.images_per_class = 2
    config.batch_size = 128
    config.pairs_per_epoch = 50_000
    # Turned groups as new classes helped Omniglot's characters (results/omniglot_cpu_turned.json);
    # whether a turned class is another class depends on your data (a turned 6 is a 9, a turned
    # photo the same thing), so it is off here: set 4 (or 2) where it is.
    config.orientations = 1
    config.model.test_time_turns = 1  # Scoring under turns, the same question: set 4 (or 2) where turns keep the class.
    config.num_epochs = 24  # The CPU Omniglot recipe's length before turned alphabets let it use 36.
    config.patience = 24
    return config
