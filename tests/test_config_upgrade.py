"""Configs saved by older versions load through upgrade_config and run as they did when they were saved."""

import json

import ml_collections
import pytest

from siamese_jax import train
from siamese_jax import workdir as workdir_files
from siamese_jax.config_files import DATASET_DEFAULTS, DEFAULTS, RENAMED, upgrade_config
from siamese_jax.experiments import base
from siamese_jax.models import build_model
from tests.conftest import load_config


def _without(config: dict, dotted_keys) -> dict:
    """A copy of a config dict lacking each dotted key (the layout of a config saved before the keys existed)."""
    config = json.loads(json.dumps(config))
    for dotted in dotted_keys:
        *sections, name = dotted.split(".")
        section = config
        for part in sections:
            section = section[part]
        section.pop(name, None)
    return config


def _saved_workdir(tmp_path, config: dict):
    """A workdir holding only `config` as its config.json."""
    (tmp_path / "config.json").write_text(json.dumps(config))
    return str(tmp_path)


def _flat(config: dict, prefix="") -> dict:
    """Dotted key -> value, sequences as tuples (JSON gives lists, configs tuples)."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = tuple(value) if isinstance(value, (list, tuple)) else value
    return out


# The layouts of older saved configs, each named by what it lacked.
OLDER_LAYOUTS = {
    "omniglot before faces (no dataset, channels, loss, heads, evals, metric, schedules or limits)": (
        "omniglot", list(DEFAULTS)),
    "omniglot before MNIST in the final evaluation": ("omniglot", ["test.mnist_tasks"]),
    "omniglot_cpu with classes_per_alphabet": ("omniglot_cpu_adam", []),
    "lfw before threshold sources, AS-norm and test crops": ("lfw", list(DATASET_DEFAULTS["lfw"])),
    "lfw with one identification way": ("lfw", ["lfw.identification.ways"]),
}


@pytest.mark.parametrize("layout", sorted(OLDER_LAYOUTS))
def test_an_older_saved_config_loads_with_the_defaults_of_its_time(layout, tmp_path):
    name, missing = OLDER_LAYOUTS[layout]
    current = load_config(name).to_dict()
    old = _without(current, missing)
    if "classes_per_alphabet" in layout:
        old["classes_per_alphabet"] = old.pop("classes_per_group")
    if "one identification way" in layout:
        old["lfw"]["identification"]["way"] = 10
    loaded = workdir_files.load_config(_saved_workdir(tmp_path, old))
    flat_loaded = _flat(loaded.to_dict())
    expected = {**DEFAULTS, **DATASET_DEFAULTS.get(current["dataset"], {})}
    for key in missing:
        if key in expected:
            assert flat_loaded[key] == expected[key], key
    if "one identification way" in layout:
        assert tuple(loaded.lfw.identification.ways) == (10,)
    # Everything the old config held is kept as it was.
    for key, value in _flat(old).items():
        target = RENAMED.get(key, key)
        assert flat_loaded[target] == value, key
    assert "classes_per_alphabet" not in loaded
    # And the upgraded config runs: the trainer's checks, the model and the experiment accept it.
    train.validate_config(loaded, num_devices=1)
    build_model(loaded.model)
    base.build(loaded)


def test_upgrading_a_current_config_changes_nothing():
    for name in ("omniglot", "omniglot_fast", "omniglot_cpu", "lfw", "lfw_cpu", "folder"):
        config = load_config(name)
        assert upgrade_config(load_config(name)).to_dict() == config.to_dict(), name


def test_the_default_of_an_older_omniglot_config_reproduces_what_it_did():
    """Configs saved before the heads and evals existed meant the paper's sigmoid embedding, L1 head,
    cross-entropy and the two validation evaluators of that time, not today's three."""
    old = _without(load_config("omniglot").to_dict(), DEFAULTS)
    upgraded = upgrade_config(ml_collections.ConfigDict(old))
    assert (upgraded.model.head, upgraded.model.embedding, upgraded.loss) == ("l1", "sigmoid", "cross_entropy")
    assert tuple(upgraded.validation.evals) == ("verification", "one_shot")
    assert upgraded.dataset == "omniglot" and upgraded.channels == 1
