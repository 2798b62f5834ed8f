"""Packed models and the shipped one: packing a workdir, predicting with it, and predict and the demo with no
--workdir."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import jax
import numpy as np
import pytest

from siamese_jax import demo, predict, pretrained
from siamese_jax import workdir as workdir_files
from siamese_jax.errors import DataError, UserError
from tests.conftest import REPO


@pytest.fixture(scope="module")
def packed(trained_omniglot, tmp_path_factory):
    """The tiny trained run, packed: (its workdir, the packed folder, pack's description)."""
    _, workdir, _ = trained_omniglot
    folder = tmp_path_factory.mktemp("packed")
    return workdir, folder, pretrained.pack(str(workdir), str(folder))


def test_a_packed_model_predicts_as_its_workdir_does(packed, run01):
    workdir, folder, description = packed
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "eval.json", "variables.msgpack"]
    saved = json.loads((folder / "config.json").read_text())
    assert saved["data_dir"] == "" and saved["cache_dir"] == ""  # The training machine's paths are not kept.
    assert "official runs" in description and "trained 2 epochs" in description
    original, unpacked = predict.Predictor(str(workdir)), predict.Predictor(str(folder))
    for leaf in jax.tree.leaves(unpacked.variables):
        assert leaf.dtype == np.float32  # Stored in float16, computed in the model's own dtypes.
    for stored, trained in zip(jax.tree.leaves(unpacked.variables), jax.tree.leaves(original.variables)):
        np.testing.assert_allclose(stored, trained, rtol=1e-3, atol=1e-4)
    a, b = run01 / "training" / "class01.png", run01 / "test" / "item01.png"
    assert unpacked.compare(a, b)["probability"] == pytest.approx(original.compare(a, b)["probability"], abs=1e-3)
    ranked = lambda p: [r["class"] for r in p.classify(b, run01 / "training")]
    assert ranked(unpacked)[:3] == ranked(original)[:3]


def test_a_packed_model_holds_its_best_parameters_alone(packed):
    _, folder, _ = packed
    config = workdir_files.load_config(str(folder))
    with pytest.raises(UserError, match="best parameters alone"):
        workdir_files.restore_model(str(folder), config, "latest")


def test_packed_variables_that_do_not_fit_the_config_are_one_line(packed, tmp_path):
    _, folder, _ = packed
    for name in ("eval.json", "variables.msgpack"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    saved = json.loads((folder / "config.json").read_text())
    saved["model"]["embedding_dim"] += 1
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(DataError, match="differ in names or shapes"):
        predict.Predictor(str(tmp_path))
    (tmp_path / "variables.msgpack").write_bytes(b"not msgpack")
    with pytest.raises(DataError, match="not a packed model"):
        predict.Predictor(str(tmp_path))


def test_pack_refuses_a_run_that_did_not_finish_and_an_output_that_holds_a_training(trained_omniglot, tmp_path):
    _, workdir, _ = trained_omniglot
    unfinished = tmp_path / "unfinished"
    shutil.copytree(workdir, unfinished)
    (unfinished / "finished.json").unlink()  # As a resumed run that was interrupted leaves it, eval.json kept.
    with pytest.raises(DataError, match="no finished, evaluated training"):
        pretrained.pack(str(unfinished), str(tmp_path / "out"))
    with pytest.raises(UserError, match="holds a training: pack into a folder of its own"):
        pretrained.pack(str(workdir), str(unfinished))
    assert not (unfinished / "variables.msgpack").exists()


def test_a_folder_with_checkpoints_and_packed_variables_is_refused(packed, trained_omniglot, tmp_path):
    config, workdir, _ = trained_omniglot
    mixed = tmp_path / "mixed"
    shutil.copytree(workdir, mixed)
    (mixed / "variables.msgpack").write_bytes((packed[1] / "variables.msgpack").read_bytes())
    with pytest.raises(DataError, match="holds both checkpoints/ and a packed model"):
        workdir_files.restore_model(str(mixed), config, "best")


def test_the_shipped_model_answers_the_synthetic_runs_well_above_chance(synthetic_data_dir, tmp_path):
    """Without real data: the shipped model still fits the model code, and is a trained one-shot classifier."""
    assert pretrained.shipped_description().startswith("configs/omniglot_cpu.py, best checkpoint: Lake's 20 official")
    shipped = predict.Predictor(pretrained.default_workdir(None))
    with zipfile.ZipFile(synthetic_data_dir / "omniglot" / "all_runs.zip") as archive:
        archive.extractall(tmp_path)
    right, trials = 0, 0
    for labels in sorted(tmp_path.glob("run*/class_labels.txt")):
        for line in labels.read_text().splitlines():
            query, answer = line.split()
            ranking = shipped.classify(tmp_path / query, labels.parent / "training")
            right, trials = right + (ranking[0]["class"] == Path(answer).stem), trials + 1
    assert trials == 8 and right >= 6  # Chance: 2 of 8 (4 candidates a run).


def test_pack_command_writes_a_model_that_predict_takes(trained_omniglot, run01, tmp_path):
    _, workdir, _ = trained_omniglot
    out = tmp_path / "model"
    run = lambda *args: subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    done = run("-m", "siamese_jax.pretrained", f"--workdir={workdir}")
    assert done.returncode == 1 and "--output=FOLDER is required" in done.stderr
    done = run("-m", "siamese_jax.pretrained", f"--workdir={workdir}", f"--output={out}")
    assert done.returncode == 0, done.stderr
    assert f"packed {workdir} into {out}" in done.stdout
    done = run("-m", "siamese_jax.predict", "compare", str(run01 / "training" / "class01.png"),
               str(run01 / "test" / "item01.png"), f"--workdir={out}", "--json")
    assert done.returncode == 0, done.stderr
    assert 0.0 <= json.loads(done.stdout)["probability"] <= 1.0


def test_the_shipped_model_classifies_the_official_runs_with_no_workdir(real_data_dir, tmp_path):
    """The package's own model, as a user meets it after the install: predict and the demo without --workdir."""
    shipped = pretrained.default_workdir(None)
    card = json.loads((pretrained.SHIPPED / "eval.json").read_text())
    shown = demo.Demo(shipped)
    assert shown.description == pretrained.shipped_description() and "official runs" in shown.description
    # Each of run01's 20 real queries against its 20 candidates, through the demo's own path.
    support = shown.support_set("run01")[0]
    right = sum(shown.classify(query, "run01")[0]["class"] == support.names[answer]
                for query, answer in zip(support.queries, support.answers))
    assert right == card["runs"]["per_run"]["run01"]["correct"]  # What the shipped model's evaluation counted.

    with zipfile.ZipFile(real_data_dir / "omniglot" / "all_runs.zip") as archive:
        archive.extractall(tmp_path, members=[n for n in archive.namelist() if n.startswith("run01/")])
    run = tmp_path / "run01"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-m", "siamese_jax.predict", "classify", str(run / "test" / "item01.png"),
                           f"--support={run / 'training'}", "--json"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    ranking = json.loads(done.stdout)["ranking"]
    assert len(ranking) == 20 and ranking[0]["class"] == predict.Predictor(shipped).classify(
        run / "test" / "item01.png", run / "training")[0]["class"]
    done = subprocess.run([sys.executable, "-m", "siamese_jax.predict", "--helpfull"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert "".join(pretrained.shipped_description().split()) in "".join(done.stdout.split())  # However it wraps.


def test_the_demo_starts_without_its_ready_made_sets_data_and_says_why(packed, monkeypatch):
    from siamese_jax.experiments import omniglot

    def offline(self):
        raise DataError("could not download all_runs.zip: no network")

    monkeypatch.setattr(omniglot.Experiment, "support_sets", offline)
    _, folder, description = packed
    shown = demo.Demo(str(folder))
    assert shown.builders == {} and shown.no_sets_because == "could not download all_runs.zip: no network"
    assert shown.description == description
    with pytest.raises(UserError, match="unknown support set 'run01'"):
        shown.support_set("run01")
