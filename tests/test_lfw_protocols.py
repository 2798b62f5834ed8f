"""LFW end to end: View 1, View 2 (thresholds only and strict), identification, AS-norm, test crops, predict."""

from __future__ import annotations

import json
import os
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest

from siamese_jax import train
from siamese_jax.evaluation import scoring
from siamese_jax import workdir as workdir_files
from siamese_jax.experiments import lfw as faces
from siamese_jax.data import lfw
from siamese_jax.errors import ConfigError, UserError
from siamese_jax.models import SiameseNet
from tests import synthetic
from tests.conftest import REPO, load_config, tiny_lfw_config


def test_view1_threshold_source_picks_which_threshold_gives_the_result(trained_faces):
    from siamese_jax import evaluate

    workdir, _, _ = trained_faces
    saved = json.loads((workdir / "eval.json").read_text())["lfw"]
    assert saved["threshold_source"] == "validation"  # configs/lfw.py's.
    by_source = saved["accuracy_by_threshold_source"]
    assert set(by_source) == {"validation", "protocol"}
    assert saved["accuracy"] == by_source["validation"]["accuracy"]
    assert saved["threshold"] == by_source["validation"]["threshold"]
    config = workdir_files.load_config(str(workdir))
    config.lfw.threshold = "protocol"
    (workdir / "config.json").write_text(config.to_json())
    try:
        protocol, summary = evaluate.evaluate_workdir(str(workdir))
    finally:
        config.lfw.threshold = "validation"
        (workdir / "config.json").write_text(config.to_json())
    assert protocol["lfw"]["threshold_source"] == "protocol"
    assert protocol["lfw"]["accuracy_by_threshold_source"] == by_source  # The same two thresholds, either way.
    assert protocol["lfw"]["threshold"] == by_source["protocol"]["threshold"]
    assert "protocol's training pairs" in protocol["lfw"]["description"]
    assert f"with the validation threshold instead: {100 * by_source['validation']['accuracy']:.2f}%" in summary
    # The protocol threshold is the best one on pairsDevTrain; the validation one need not be.
    assert by_source["protocol"]["threshold"] != by_source["validation"]["threshold"]


def test_view1_training_reports_the_protocol(trained_faces):
    workdir, config, result = trained_faces
    saved = json.loads((workdir / "eval.json").read_text())
    assert saved["lfw"]["protocol"] == "view1" and saved["lfw"]["pairs"] == 8  # The synthetic pairsDevTest.
    assert saved["lfw"]["std_error"] is None and 0.0 <= saved["lfw"]["accuracy"] <= 1.0
    assert 0.0 <= saved["lfw"]["auc"] <= 1.0
    (ident,) = saved["identification"]
    assert ident["way"] == 4 and ident["trials"] == 40
    lo, hi = ident["ci95"]
    assert lo <= ident["accuracy"] <= hi
    epochs = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert len(epochs) == 2 and all("val_verification_auc" in m for m in epochs)
    # Batch-norm running averages are part of the best checkpoint and restore with it.
    _, variables = workdir_files.restore_model(str(workdir), config, "best")
    assert "batch_stats" in variables


def _evaluate(*flags, env_data=None):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "siamese_jax.evaluate", *flags], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_evaluate_view2_thresholds_only(trained_faces, tmp_path):
    workdir, _, _ = trained_faces
    output = tmp_path / "view2.json"
    done = _evaluate(f"--workdir={workdir}", "--protocol=view2", "--notest_time_flip", "--cohort_norm_images=5",
                     "--test_crops=100", f"--output={output}")
    assert done.returncode == 0, done.stderr
    assert json.loads(output.read_text())["model_overrides"] == {"test_time_flip": False}
    assert json.loads(output.read_text())["evaluation_overrides"] == {"lfw.cohort_norm.images": 5,
                                                                      "lfw.test_crops": [100]}
    report = json.loads(output.read_text())["lfw"]
    assert "AS-normalised against 5 photos" in report["description"] and "crops of 130, 100 pixels" in report["description"]
    assert report["protocol"] == "view2" and report["setting"] == "thresholds_only"
    assert report["pairs"] == 40 and len(report["per_fold"]) == 10 and report["std_error"] is not None
    assert report["accuracy"] == pytest.approx(np.mean([f["accuracy"] for f in report["per_fold"]]))
    assert "View 2, thresholds only" in done.stdout
    wrong = _evaluate(f"--workdir={workdir}", "--test_crops=100,wide", f"--output={tmp_path / 'no.json'}")
    assert wrong.returncode == 1 and "Traceback" not in wrong.stderr
    assert wrong.stderr.strip().splitlines()[-1] == ("error: --test_crops takes crop sides in pixels, e.g. "
                                                     "--test_crops=118,143; got 100,wide")


def test_evaluate_with_and_without_test_time_flip(trained_faces):
    from siamese_jax import evaluate

    workdir, config, _ = trained_faces
    assert config.model.test_time_flip  # configs/lfw.py's default, which the run's own evaluation used.
    saved = json.loads((workdir / "eval.json").read_text())
    flipped, _ = evaluate.evaluate_workdir(str(workdir), model_overrides={"test_time_flip": True})
    plain, _ = evaluate.evaluate_workdir(str(workdir), model_overrides={"test_time_flip": False})
    assert flipped["lfw"]["threshold"] == pytest.approx(saved["lfw"]["threshold"], abs=1e-6)
    assert plain["lfw"]["threshold"] != pytest.approx(flipped["lfw"]["threshold"], abs=1e-6)
    assert plain["model_overrides"] == {"test_time_flip": False} and "model_overrides" not in saved
    with pytest.raises(ValueError, match="model.features changes the parameters"):
        workdir_files.load_config(str(workdir), {"features": (4,)})


@pytest.mark.slow
def test_compare_two_faces_says_same_or_different_at_the_runs_threshold(trained_faces, synthetic_lfw_dir, tmp_path):
    import tarfile

    workdir, _, _ = trained_faces
    with tarfile.open(lfw.locate_archive(str(synthetic_lfw_dir))) as archive:
        photos = sorted((m for m in archive.getmembers() if m.isfile()), key=lambda m: m.name)[:2]
        for member in photos:
            (tmp_path / Path(member.name).name).write_bytes(archive.extractfile(member).read())
    a, b = (tmp_path / Path(m.name).name for m in photos)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-m", "siamese_jax.predict", "compare", str(a), str(b),
                           f"--workdir={workdir}", "--json"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    threshold = json.loads((workdir / "eval.json").read_text())["lfw"]["logit_threshold"]
    assert result["threshold"] == pytest.approx(threshold)
    assert result["same"] == (result["logit"] > threshold)
    assert result["probability"] == pytest.approx(1 / (1 + np.exp(-result["logit"])), rel=1e-5)


def test_predict_threshold_is_on_plain_logits(trained_faces):
    workdir, config, _ = trained_faces
    report = json.loads((workdir / "eval.json").read_text())
    experiment = faces.Experiment(config)
    model, variables = workdir_files.restore_model(str(workdir), config, "best")
    # The run's verification scores have test crops and AS-norm; the threshold for one pair's logit has neither.
    assert faces.test_crops(config.lfw) and faces.cohort_norm(config.lfw) is not None
    assert report["lfw"]["logit_threshold"] == pytest.approx(experiment.validation_threshold(model, variables, None,
                                                                                             raw=True))
    assert report["lfw"]["logit_threshold"] != pytest.approx(report["lfw"]["threshold"], abs=1e-3)
    assert experiment.verification_threshold(report) == report["lfw"]["logit_threshold"]
    # A report written before logit_threshold existed: its threshold is on normalised scores here, so none.
    del report["lfw"]["logit_threshold"]
    assert experiment.verification_threshold(report) is None
    config = config.copy_and_resolve_references()
    config.lfw.test_crops, config.lfw.cohort_norm.images = (), 0
    assert faces.Experiment(config).verification_threshold(report) == report["lfw"]["threshold"]


@pytest.mark.slow
def test_evaluate_strict_view2_checks_the_fold_workdirs(trained_faces):
    workdir, _, _ = trained_faces
    done = _evaluate(*[f"--fold_workdirs={','.join([str(workdir)] * 10)}", "--output=/tmp/unused.json"])
    assert done.returncode != 0 and "is not a View 2 fold run" in done.stderr
    assert "Traceback" not in done.stderr


def test_view2_fold_training_excludes_the_test_fold(synthetic_lfw_dir, cache_dir):
    config = tiny_lfw_config(synthetic_lfw_dir, cache_dir)
    config.lfw.protocol, config.lfw.fold = "view2", 3
    experiment = faces.Experiment(config)
    dataset = experiment.dataset
    train_ids, validation_ids = experiment.split_ids
    used = set(dataset.person[np.concatenate([train_ids, validation_ids])])
    assert used.isdisjoint({12, 13, 14, 15}) and not set(dataset.person[train_ids]) & set(dataset.person[validation_ids])
    assert all(synthetic.lfw_image_count(p) >= 2 for p in used)
    config.lfw.fold = 10
    with pytest.raises(ConfigError, match="config.lfw.fold must be in 0..9"):
        faces.Experiment(config)


@pytest.mark.slow
def test_tiny_run_on_real_lfw(real_lfw_dir, cache_dir, tmp_path):
    config = tiny_lfw_config(real_lfw_dir, cache_dir)
    config.lfw.validation_fraction = 0.1
    config.validation.way = 10
    config.lfw.identification.ways = (10, 50)
    config.lfw.test_crops = ()  # Each would decode all 13,233 photos again; the synthetic LFW tests them.
    result = train.train_and_evaluate(config, str(tmp_path))
    assert result["lfw"]["pairs"] == 1000 and [r["way"] for r in result["identification"]] == [10, 50]
    assert result["identification"][0]["people"] > 100 and result["identification"][1]["trials"] == 40


def _fold_workdir(root, fold, **lfw_changes):
    """A workdir holding only the config.json of a View 2 fold run."""
    config = load_config("lfw_cpu")
    config.lfw.protocol, config.lfw.fold = "view2", fold
    for key, value in lfw_changes.items():
        config.lfw[key] = value
    path = root / f"w{fold}_{len(list(root.glob('*')))}"
    path.mkdir(parents=True)
    (path / "config.json").write_text(config.to_json())
    return str(path)


def test_fold_workdirs_in_any_order_and_clear_errors(tmp_path):
    dirs = [_fold_workdir(tmp_path, k) for k in range(10)]
    assert faces.fold_workdirs(list(reversed(dirs))) == dirs
    with pytest.raises(UserError, match="missing fold\\(s\\) 4"):
        faces.fold_workdirs(dirs[:4] + dirs[5:])
    twice = _fold_workdir(tmp_path, 2)
    with pytest.raises(UserError, match=f"fold 2 is given twice: {dirs[2]} and {twice}"):
        faces.fold_workdirs(dirs + [twice])
    other_crop = _fold_workdir(tmp_path, 3, crop=120)
    with pytest.raises(UserError, match="preprocesses images differently"):
        faces.fold_workdirs(dirs[:3] + [other_crop] + dirs[4:])


def test_identification_reports_each_way_and_skips_one_too_large(trained_faces):
    workdir, config, _ = trained_faces
    config = config.copy_and_resolve_references()
    config.lfw.identification.ways = (2, 4, 500)
    experiment = faces.Experiment(config)
    model, variables = workdir_files.restore_model(str(workdir), config, "best")
    results = experiment.identification(model, variables, None)
    assert [r["way"] for r in results] == [2, 4, 500]
    assert results[0]["trials"] == results[1]["trials"] == 40 and "needs 500 unseen people" in results[2]["skipped"]
    assert "500-way one-shot identification: skipped" in faces.format_lfw({"lfw": {**_LFW_LINE}, "identification": results})


_LFW_LINE = {"protocol": "view1", "setting": "view1", "accuracy": 0.5, "pairs": 8, "auc": 0.5, "description": "d",
             "std_error": None}


@pytest.mark.slow
def test_one_command_view2_trains_every_fold_resumes_and_reports(synthetic_lfw_dir, cache_dir, tmp_path, monkeypatch,
                                                                capsys):
    from siamese_jax import lfw_view2

    config = tiny_lfw_config(synthetic_lfw_dir, cache_dir, num_epochs=1)
    config.lfw.test_crops = ()  # Tested on their own; ten folds need not decode them.
    real_train = train.train_and_evaluate
    trained = []

    def train_until_fold_3(config, workdir, devices=None):
        if config.lfw.fold == 3 and not trained.count(3):
            trained.append(3)
            raise KeyboardInterrupt  # As Ctrl-C would, after folds 0-2 finished.
        trained.append(config.lfw.fold)
        return real_train(config, workdir, devices)

    monkeypatch.setattr(train, "train_and_evaluate", train_until_fold_3)
    with pytest.raises(KeyboardInterrupt):
        lfw_view2.run_view2(config, str(tmp_path))
    result = lfw_view2.run_view2(config, str(tmp_path))  # The same command again.
    assert trained == [0, 1, 2, 3] + list(range(3, 10))  # Folds 0-2 were not trained again.
    assert "fold 0: done" in capsys.readouterr().out
    saved = json.loads((tmp_path / "view2.json").read_text())
    assert saved["lfw"]["setting"] == "strict" and len(saved["lfw"]["per_fold"]) == 10
    assert saved["lfw"]["std_error"] is not None and result["lfw"]["accuracy"] == saved["lfw"]["accuracy"]
    assert saved["fold_workdirs"] == [str(tmp_path / f"fold_{k}") for k in range(10)]
    # The command's config says how the finished folds are scored: running it again with score
    # normalisation off re-evaluates them without training.
    assert "AS-normalised" in saved["lfw"]["description"] and saved["lfw"]["threshold_source"] == "validation"
    config.lfw.cohort_norm.images, config.lfw.threshold = 0, "protocol"
    plain = lfw_view2.run_view2(config, str(tmp_path))
    assert len(trained) == 11 and "AS-normalised" not in plain["lfw"]["description"]
    assert plain["lfw"]["threshold_source"] == "protocol" and plain["lfw"]["per_fold"] != saved["lfw"]["per_fold"]


def test_view2_trains_a_fold_that_holds_an_evaluation_but_no_finished_training(synthetic_lfw_dir, cache_dir, tmp_path,
                                                                             monkeypatch):
    from siamese_jax import lfw_view2

    fold_0 = tmp_path / "fold_0"
    fold_0.mkdir()
    # An evaluation of a half-trained fold in its eval.json, but no finished.json: the fold's training has not ended.
    (fold_0 / "eval.json").write_text(json.dumps({"checkpoint": "latest", "lfw": {"accuracy": 0.5}}))
    asked = []

    def train_fold(config, workdir, devices=None):
        asked.append(config.lfw.fold)
        raise KeyboardInterrupt  # Enough: which fold it trains first is what counts.

    monkeypatch.setattr(train, "train_and_evaluate", train_fold)
    with pytest.raises(KeyboardInterrupt):
        lfw_view2.run_view2(tiny_lfw_config(synthetic_lfw_dir, cache_dir, num_epochs=1), str(tmp_path))
    assert asked == [0]


def test_a_summary_of_a_run_validated_by_verification_alone(trained_faces):
    _, config, result = trained_faces
    config = config.copy_and_resolve_references()
    config.validation.evals, config.validation.metric = ("verification",), "verification_auc"
    validation = {k: v for k, v in result["validation"].items() if k.startswith("verification")}
    summary = faces.Experiment(config).summarize(dict(result, validation=validation))
    (line,) = [line for line in summary.splitlines() if line.startswith("validation")]
    assert line == (f"validation (held-out training people): verification "
                    f"{100 * validation['verification_accuracy']:.2f}% (AUC {validation['verification_auc']:.4f}; "
                    f"{validation['verification_pairs']} pairs, different ones within a group)")


def test_cohort_holds_only_training_photos_of_the_fold(synthetic_lfw_dir, cache_dir):
    config = tiny_lfw_config(synthetic_lfw_dir, cache_dir)
    config.lfw.protocol, config.lfw.fold = "view2", 3
    config.lfw.cohort_norm.images = 6
    experiment = faces.Experiment(config)
    train_ids, validation_ids = experiment.split_ids
    cohort = experiment.cohort_ids
    assert len(cohort) == 6 and set(cohort) <= set(train_ids)
    assert set(experiment.dataset.person[cohort]).isdisjoint({12, 13, 14, 15})  # Fold 3's test people.
    config.lfw.cohort_norm.images = 10_000  # More than there are: every training photo.
    np.testing.assert_array_equal(faces.Experiment(config).cohort_ids, np.sort(train_ids))
    config.lfw.cohort_norm.images = 0
    assert faces.Experiment(config).cohort_ids is None
    config.lfw.cohort_norm.top = 0
    with pytest.raises(ConfigError, match="config.lfw.cohort_norm needs images >= 0"):
        faces.Experiment(config)


def test_evaluate_with_and_without_cohort_norm(trained_faces):
    from siamese_jax import evaluate

    workdir, config, _ = trained_faces
    assert faces.cohort_norm(config.lfw) is not None  # configs/lfw.py's default, which the run's evaluation used.
    saved = json.loads((workdir / "eval.json").read_text())
    assert "AS-normalised against" in saved["lfw"]["description"]
    plain, summary = evaluate.evaluate_workdir(str(workdir), evaluation_overrides={"lfw.cohort_norm.images": 0})
    assert "AS-normalised" not in plain["lfw"]["description"]
    assert plain["evaluation_overrides"] == {"lfw.cohort_norm.images": 0} and "evaluation_overrides" not in saved
    assert plain["lfw"]["threshold"] != pytest.approx(saved["lfw"]["threshold"], abs=1e-6)
    # Identification and validation scores are not normalised.
    assert plain["identification"] == saved["identification"] and plain["validation"] == saved["validation"]
    # One evaluation encodes the cohort once, however many pair sets it scores; other variables encode it again.
    experiment = faces.Experiment(config)
    model, variables = workdir_files.restore_model(str(workdir), config, "best")
    first = experiment.score_normalizer.cohort_embeddings(model, variables, None)
    assert experiment.score_normalizer.cohort_embeddings(model, variables, None) is first
    assert experiment.score_normalizer.cohort_embeddings(model, dict(variables), None) is not first
    with pytest.raises(ValueError, match="lfw.crop is not an evaluation setting"):
        workdir_files.load_config(str(workdir), evaluation_overrides={"lfw.crop": 100})


def test_test_crops_average_each_photos_embeddings_for_verification(trained_faces, synthetic_lfw_dir, cache_dir):
    workdir, _, _ = trained_faces
    config = workdir_files.load_config(str(workdir), evaluation_overrides={"lfw.test_crops": (100, 160),
                                                                           "lfw.cohort_norm.images": 0})
    experiment = faces.Experiment(config)
    views = experiment.verification_images
    prep = lfw.preprocessing(config)
    assert views.shape == (len(experiment.dataset.images), 3, *experiment.dataset.images.shape[1:])
    np.testing.assert_array_equal(views[:, 0], experiment.dataset.images)
    for v, crop in ((1, 100), (2, 160)):
        other = lfw.load_lfw(str(synthetic_lfw_dir), str(cache_dir), lfw.Preprocessing(crop, prep.size, prep.channels))
        np.testing.assert_array_equal(views[:, v], other.images)
    model, variables = workdir_files.restore_model(str(workdir), config, "best")
    pairs = lfw.read_pairs(str(synthetic_lfw_dir), "pairsDevTest.txt")
    left, right = lfw.pair_ids(experiment.dataset, pairs)
    each = np.stack([np.asarray(scoring.encode(model, variables, views[:, v], 32)) for v in range(3)], 1)
    mean = each.mean(1) / np.linalg.norm(each.mean(1), axis=-1, keepdims=True)
    expected = np.asarray(model.apply(variables, mean[left], mean[right], method=SiameseNet.score))
    np.testing.assert_allclose(experiment.pair_scores(model, variables, pairs, None), expected, rtol=1e-4, atol=1e-5)
    assert "averaged over centred crops of 130, 100, 160 pixels" in experiment.description("view1")
    plain = workdir_files.load_config(str(workdir), evaluation_overrides={"lfw.test_crops": (),
                                                                          "lfw.cohort_norm.images": 0})
    assert not np.allclose(faces.Experiment(plain).pair_scores(model, variables, pairs, None), expected, atol=1e-4)


@pytest.mark.parametrize("crops", [(0,), (300,), (100, 100), (130,), ("100",)])
def test_bad_test_crops_are_refused(crops, synthetic_lfw_dir, cache_dir):
    config = tiny_lfw_config(synthetic_lfw_dir, cache_dir)
    config.lfw.test_crops = crops
    with pytest.raises(ConfigError, match=r"config.lfw.test_crops must be distinct sides in 1..250 pixels other than "
                                          r"config.lfw.crop \(130\)"):
        faces.Experiment(config)


def test_test_time_turns_are_refused_for_faces(synthetic_lfw_dir, cache_dir):
    config = tiny_lfw_config(synthetic_lfw_dir, cache_dir)
    config.model.test_time_turns = 4
    with pytest.raises(ConfigError, match="test_time_turns=4 does not apply to faces"):
        faces.Experiment(config)
