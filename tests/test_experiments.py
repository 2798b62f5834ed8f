"""The dataset registry: BUILD.md's worked example adds a dataset; generic modules import no dataset."""

import re
import subprocess
import sys
import types

import numpy as np
import pytest

from siamese_jax import train
from siamese_jax.errors import ConfigError
from siamese_jax.experiments import base
from tests import synthetic
from tests.conftest import REPO, load_config, shrunk


def test_unknown_dataset_is_a_config_error():
    config = load_config("omniglot_cpu")
    config.dataset = "imagenet"
    with pytest.raises(ConfigError, match="config.dataset must be one of"):
        base.build(config)


def test_build_md_worked_example_adds_a_dataset(monkeypatch, cache_dir, tmp_path):
    """The module in BUILD.md, registered under its name, trains, evaluates and converts images."""
    text = (REPO / "BUILD.md").read_text()
    section = text[text.index("## Adding a dataset"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    module = types.ModuleType("siamese_jax.experiments.digits")
    exec(compile(code, "BUILD.md", "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, "siamese_jax.experiments.digits", module)
    monkeypatch.setattr(base, "DATASETS", (*base.DATASETS, "digits"))

    config = shrunk(load_config("omniglot_cpu"), cache_dir)
    config.dataset = "digits"
    config.image_size = 28
    config.data_dir = str(synthetic.make_mnist(tmp_path / "data"))
    config.validation.way = 2
    config.validation.one_shot_trials = 20
    config.validation.verification_pairs = 20
    result = train.train_and_evaluate(config, str(tmp_path / "run"))
    assert set(result["validation"]) >= {"one_shot_accuracy", "verification_auc", "one_shot_trials"}
    assert result["validation"]["one_shot_trials"] == 20

    from siamese_jax import evaluate

    again, summary = evaluate.evaluate_workdir(str(tmp_path / "run"))
    assert again["validation"] == result["validation"] and summary.startswith("validation: ")
    from PIL import Image

    Image.fromarray(np.full((40, 40), 255, np.uint8)).save(tmp_path / "digit.png")
    assert base.build(config).image_converter()(tmp_path / "digit.png").shape == (28, 28)


@pytest.mark.parametrize("module", ["evaluation", "tasks", "sampling", "losses", "optim", "models", "workdir"])
def test_generic_modules_import_no_dataset(module):
    """Importing a generic module alone must not import any dataset or experiment module (no loops)."""
    code = (f"import sys; import siamese_jax.{module}; "
            "print(sorted(m for m in sys.modules if m.startswith(('siamese_jax.experiments', 'siamese_jax.data.'))))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    imported = eval(done.stdout.strip().splitlines()[-1])
    assert not [m for m in imported if m.startswith("siamese_jax.experiments")
                or m.split(".")[-1] in ("omniglot", "lfw", "folders", "mnist")]


@pytest.mark.parametrize("module", ["train", "evaluate", "predict", "report"])
def test_commands_name_no_dataset(module):
    """No dataset's module is imported and no dataset name is compared against; help texts may mention them."""
    source = (REPO / "siamese_jax" / f"{module}.py").read_text()
    assert not re.search(r"(experiments|data)\.(omniglot|lfw|folder|folders|mnist)\b|import (faces|transfer)", source)
    assert not re.search(r"[\"'](omniglot|lfw|folder)[\"']", source)
