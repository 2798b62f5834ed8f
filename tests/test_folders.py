"""Your own dataset: class folders (flat or grouped), the class split, training and evaluation end to end."""

import json
import subprocess
import sys

import numpy as np
import pytest

from siamese_jax import train
from siamese_jax.data import folders
from siamese_jax.errors import ConfigError, DataError, UserError
from tests import synthetic
from tests.conftest import REPO, load_config, shrunk


def test_flat_and_grouped_layouts(tmp_path):
    flat = folders.load_image_folder(str(synthetic.make_class_folder(tmp_path / "flat", classes=3, per_class=2)),
                                     "strokes", 16, 1, str(tmp_path / "cache"))
    assert flat.images.shape == (6, 16, 16) and flat.group_names == ("",)
    assert flat.class_names == ("class_00", "class_01", "class_02") and flat.label.tolist() == [0, 0, 1, 1, 2, 2]
    grouped = folders.load_image_folder(
        str(synthetic.make_class_folder(tmp_path / "grouped", groups=("Latin", "Runic"), classes=2, per_class=3)),
        "strokes", 16, 1, str(tmp_path / "cache"))
    assert grouped.group_names == ("Latin", "Runic") and grouped.class_names[-1] == "Runic/class_01"
    assert grouped.group.tolist() == [0] * 6 + [1] * 6
    # Strokes become bright ink on black.
    assert grouped.images.mean() < 100 and grouped.images.max() > 200


def test_cache_is_used_and_refreshed(tmp_path):
    root = synthetic.make_class_folder(tmp_path / "data", classes=2, per_class=2)
    first = folders.load_image_folder(str(root), "strokes", 16, 1, str(tmp_path / "cache"))
    assert len(list((tmp_path / "cache").glob("folder-*.npz"))) == 1
    (root / "class_01" / "9.png").write_bytes((root / "class_00" / "0.png").read_bytes())
    second = folders.load_image_folder(str(root), "strokes", 16, 1, str(tmp_path / "cache"))
    assert len(second.label) == len(first.label) + 1


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda root: root.mkdir(), "holds no subfolders"),
        (lambda root: (root / "a").mkdir(parents=True), r"class folder\(s\) .* hold no images|holds no subfolders"),
        (lambda root: (synthetic.make_class_folder(root, classes=1), synthetic.make_class_folder(root, ("g",), 1)),
         "mixes class folders"),
        (lambda root: (synthetic.make_class_folder(root, classes=2), (root / "class_00" / "x.png").write_text("no")),
         "x.png is not an image file"),
    ],
)
def test_bad_folders(tmp_path, make, message):
    root = tmp_path / "data"
    make(root)
    with pytest.raises(DataError, match=message):
        folders.load_image_folder(str(root), "strokes", 16, 1, str(tmp_path / "cache"))


def test_missing_folder_and_bad_style(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        folders.load_image_folder(str(tmp_path / "nope"), "strokes", 16, 1, None)
    with pytest.raises(ConfigError, match="style must be one of"):
        folders.load_image_folder(str(tmp_path), "sketch", 16, 1, None)


def test_split_divides_each_group_and_is_disjoint(tmp_path):
    root = synthetic.make_class_folder(tmp_path / "data", groups=("A", "B"), classes=10, per_class=2)
    dataset = folders.load_image_folder(str(root), "strokes", 8, 1, str(tmp_path / "cache"))
    splits = folders.split_classes(dataset, (0.6, 0.2, 0.2), seed=0)
    classes = {name: set(dataset.label[ids].tolist()) for name, ids in splits.items()}
    assert sum(len(c) for c in classes.values()) == 20 and not (classes["train"] & classes["test"])
    assert not (classes["train"] & classes["validation"]) and not (classes["validation"] & classes["test"])
    for name, count in (("train", 6), ("validation", 2), ("test", 2)):
        for g in (0, 1):
            assert len(np.unique(dataset.label[splits[name]][dataset.group[splits[name]] == g])) == count
    assert folders.split_classes(dataset, (0.6, 0.2, 0.2), seed=0)["test"].tolist() == splits["test"].tolist()
    with pytest.raises(ConfigError, match="summing to 1"):
        folders.split_classes(dataset, (0.5, 0.2, 0.2), seed=0)


def _tiny_folder_config(root, cache_dir):
    config = shrunk(load_config("folder"), cache_dir)
    config.folder.path = str(root)
    config.folder.split = (0.4, 0.3, 0.3)  # 3 validation and 3 test classes in each group of 10.
    config.validation.way = 3
    config.validation.one_shot_trials = 30
    config.validation.verification_pairs = 40
    config.test.way = 3
    config.test.tasks = 30
    return config


@pytest.mark.slow
def test_train_and_evaluate_on_a_class_folder(tmp_path):
    root = synthetic.make_class_folder(tmp_path / "data", groups=("A", "B"), classes=10, per_class=4)
    config = _tiny_folder_config(root, tmp_path / "cache")
    result = train.train_and_evaluate(config, str(tmp_path / "work"))
    assert result["folder"]["classes"] == {"train": 8, "validation": 6, "test": 6}
    assert result["test_tasks"]["trials"] == 30 and result["test_tasks"]["way"] == 3
    done = subprocess.run([sys.executable, "-m", "siamese_jax.evaluate", f"--workdir={tmp_path / 'work'}",
                           "--way=2", "--tasks=20", f"--output={tmp_path / 'eval.json'}"],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert evaluated["test_tasks"]["way"] == 2 and evaluated["test_tasks"]["trials"] == 20
    assert "test: 2-way 1-shot tasks" in done.stdout


@pytest.mark.slow
def test_folder_config_without_path(tmp_path):
    config = _tiny_folder_config("", tmp_path / "cache")
    with pytest.raises(UserError, match="config.folder.path is empty"):
        train.train_and_evaluate(config, str(tmp_path / "work"))


@pytest.mark.slow
def test_too_few_validation_classes_says_what_to_change(tmp_path):
    root = synthetic.make_class_folder(tmp_path / "data", groups=("A", "B"), classes=10, per_class=4)
    config = _tiny_folder_config(root, tmp_path / "cache")
    config.folder.split = (0.7, 0.15, 0.15)
    with pytest.raises(DataError, match=r"validation classes: .* lower config.validation.way, or give the validation"):
        train.train_and_evaluate(config, str(tmp_path / "work"))
