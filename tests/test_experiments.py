"""The dataset registry: BUILD.md's worked example adds a dataset; generic modules import no dataset."""

import re
import subprocess
import sys
import types
from pathlib import Path

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


@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.parametrize("module", ["evaluation.evaluators", "evaluation.score_norm", "tasks", "sampling", "losses", "optim", "models", "workdir"])
def test_generic_modules_import_no_dataset(module):
    """Importing a generic module alone must not import any dataset or experiment module (no loops)."""
    code = (f"import sys; import siamese_jax.{module}; "
            "print(sorted(m for m in sys.modules if m.startswith(('siamese_jax.experiments', 'siamese_jax.data.'))))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    imported = eval(done.stdout.strip().splitlines()[-1])
    assert not [m for m in imported if m.startswith("siamese_jax.experiments")
                or m.split(".")[-1] in ("omniglot", "lfw", "folders", "mnist")]


@pytest.mark.parametrize("module", ["train", "evaluate", "predict", "report", "demo"])
def test_commands_name_no_dataset(module):
    """No dataset's module is imported and no dataset name is compared against; help texts may mention them."""
    source = (REPO / "siamese_jax" / f"{module}.py").read_text()
    assert not re.search(r"(experiments|data)\.(omniglot|lfw|folder|folders|mnist)\b|import (faces|transfer)", source)
    assert not re.search(r"[\"'](omniglot|lfw|folder)[\"']", source)


def test_every_third_party_import_is_declared_in_pyproject():
    """A module imported by the package but missing from pyproject.toml breaks a fresh install (scipy once did)."""
    import ast

    tomllib = pytest.importorskip("tomllib")  # Python 3.11 and newer.
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    # The core dependencies, and the optional extras of optional features (the demo's gradio).
    requirements = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    declared = {re.split(r"[<>=\[ ;]", d)[0].lower().replace("_", "-") for d in requirements}
    # Import names whose distribution is named otherwise; etils comes with etils[epath].
    distribution = {"PIL": "pillow", "ml_collections": "ml-collections", "tensorflow_datasets": "tensorflow-datasets",
                    "orbax": "orbax-checkpoint", "absl": "absl-py", "tensorboardX": "tensorboardx", "jaxlib": "jax"}
    imported = set()
    for path in (REPO / "siamese_jax").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            imported |= {name.split(".")[0] for name in names}
    third_party = {name for name in imported - set(sys.stdlib_module_names) if name != "siamese_jax"}
    missing = sorted(name for name in third_party if distribution.get(name, name).lower() not in declared)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_a_workdir_saved_before_the_new_config_keys_still_evaluates(trained_omniglot, tmp_path):
    """Configs saved by older versions lack validation.evals, model.dropout, lr_schedule and others."""
    import json
    import shutil

    from siamese_jax import evaluate

    _, workdir, result = trained_omniglot
    old = tmp_path / "old"
    shutil.copytree(workdir, old)
    saved = json.loads((old / "config.json").read_text())
    for key in ("lr_schedule", "warmup_epochs", "weight_decay", "max_train_seconds"):
        saved.pop(key)
    saved["model"].pop("dropout")
    saved["validation"].pop("evals")
    (old / "config.json").write_text(json.dumps(saved))
    again, _ = evaluate.evaluate_workdir(str(old))
    assert again["runs"]["correct"] == result["runs"]["correct"]
    # The evaluators of that time (verification within alphabets, one-shot) give the numbers they gave.
    assert set(again["validation"]) == {"verification_accuracy", "verification_auc", "verification_pairs",
                                        "one_shot_accuracy", "one_shot_trials"}
    assert again["validation"] == {key: result["validation"][key] for key in again["validation"]}


COMMANDS = {"train", "evaluate", "predict", "report", "lfw_view2", "demo", "tune"}


def _package_imports() -> dict[str, set[str]]:
    """Module -> the siamese_jax modules it imports (at any depth in its source), by dotted name under the package."""
    import ast

    modules = {}
    for path in (REPO / "siamese_jax").rglob("*.py"):
        name = ".".join(path.relative_to(REPO / "siamese_jax").with_suffix("").parts).removesuffix(".__init__")
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("siamese_jax"):
                base = node.module.removeprefix("siamese_jax").lstrip(".")
                for alias in node.names:
                    candidate = f"{base}.{alias.name}".lstrip(".")
                    imported.add(candidate if (REPO / "siamese_jax" / Path(*candidate.split("."))).with_suffix(
                        ".py").exists() or (REPO / "siamese_jax" / Path(*candidate.split("."))).is_dir() else base)
            elif isinstance(node, ast.Import):
                imported |= {a.name.removeprefix("siamese_jax.") for a in node.names if a.name.startswith("siamese_jax.")}
        modules[name] = {m for m in imported if m and m != name}
    return modules


def test_no_library_module_imports_a_command_and_imports_have_no_cycle():
    modules = _package_imports()
    assert {"train", "evaluation.scoring", "config_files"} <= set(modules)
    library = {name: imports for name, imports in modules.items() if name not in COMMANDS}
    offenders = {name: sorted(imports & COMMANDS) for name, imports in library.items() if imports & COMMANDS}
    assert not offenders, f"library modules importing a command: {offenders}"
    # Depth-first search for a cycle among the package's own modules (a package counts as its __init__).
    state: dict[str, str] = {}

    def visit(name, trail):
        if state.get(name) == "open":
            raise AssertionError(f"import cycle: {' -> '.join(trail + [name])}")
        if state.get(name) == "done" or name not in modules:
            return
        state[name] = "open"
        for other in sorted(modules[name]):
            visit(other, trail + [name])
        state[name] = "done"

    for name in sorted(modules):
        visit(name, [])
