"""Faces: LFW files and protocols, the contrastive loss, batch norm, and training end to end."""

from __future__ import annotations

import json
import os
from pathlib import Path
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from siamese_jax import augment, evaluation, losses, train
from siamese_jax import workdir as workdir_files
from siamese_jax.experiments import lfw as faces
from siamese_jax.data import lfw
from siamese_jax.errors import ConfigError, DataError, UserError
from siamese_jax.models import Encoder, SiameseNet, init_variables
from tests import synthetic
from tests.conftest import REPO, load_config, tiny_lfw_config

PAIRS_TXT = "2\t2\nAnn\t1\t2\nBob\t1\t3\nAnn\t1\tBob\t2\nCid\t1\tAnn\t2\nCid\t1\t2\nDee\t2\t3\nCid\t2\tDee\t1\nDee\t3\tAnn\t1\n"


def test_pairs_file_with_folds():
    pairs = lfw.parse_pairs(PAIRS_TXT, "pairs.txt")
    assert pairs.num_folds == 2 and len(pairs.same) == 8
    np.testing.assert_array_equal(pairs.fold, [0, 0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(pairs.same, [1, 1, 0, 0, 1, 1, 0, 0])
    assert (pairs.name1[0], int(pairs.number1[0]), pairs.name2[0], int(pairs.number2[0])) == ("Ann", 1, "Ann", 2)
    assert (pairs.name1[3], int(pairs.number1[3]), pairs.name2[3], int(pairs.number2[3])) == ("Cid", 1, "Ann", 2)
    np.testing.assert_array_equal(pairs.line, np.arange(2, 10))


def test_pairs_file_of_view1_and_trailing_blank_lines():
    pairs = lfw.parse_pairs("1\nAnn\t1\t2\nAnn\t1\tBob\t1\n\n\n", "pairsDevTest.txt")
    assert pairs.num_folds == 1 and pairs.same.tolist() == [True, False]


@pytest.mark.parametrize(
    "text, message",
    [
        ("1\nAnn\t1\tBob\t1\nAnn\t1\t2\n", "line 2: expected a matched pair"),
        ("1\nAnn\t1\t2\nAnn\t1\t2\n", "line 3: expected a mismatched pair"),
        ("1\nAnn\tone\t2\nAnn\t1\tBob\t1\n", "line 2: image number 'one'"),
        ("2\nAnn\t1\t2\nAnn\t1\tBob\t1\n", "promises 1 fold.*4 lines.*but 2 follow"),
        ("ten\nAnn\t1\t2\n", "line 1: expected"),
        ("", "line 1: expected"),
    ],
)
def test_malformed_pairs_file_names_file_and_line(text, message):
    with pytest.raises(DataError, match=f"pairs.txt.*{message}"):
        lfw.parse_pairs(text, "pairs.txt")


def test_people_files_of_both_views():
    view2 = lfw.parse_people("2\n2\nAnn\t2\nBob\t3\n1\nCid\t2\n", "people.txt")
    assert view2.names == ("Ann", "Bob", "Cid") and view2.fold.tolist() == [0, 0, 1]
    assert view2.counts.tolist() == [2, 3, 2] and view2.line.tolist() == [3, 4, 6]
    view1 = lfw.parse_people("2\nAnn\t2\nBob\t3\n", "peopleDevTrain.txt")
    assert view1.names == ("Ann", "Bob") and view1.fold.tolist() == [0, 0]


@pytest.mark.parametrize(
    "text, message",
    [
        ("2\nAnn\t2\n", "ends at line 2"),
        ("1\nAnn\t2\nBob\t1\n", "line 3: more lines"),
        ("1\nAnn\t2\textra\n", "line 2: expected 'Name<TAB>count'"),
        ("2\n1\nAnn\t2\nBob\t2\n", "line 4: expected the number of people in fold 2"),
    ],
)
def test_malformed_people_file(text, message):
    with pytest.raises(DataError, match=f"people.txt.*{message}"):
        lfw.parse_people(text, "people.txt")


@pytest.fixture(scope="module")
def synthetic_faces(synthetic_lfw_dir, cache_dir):
    """The synthetic LFW decoded at 16x16 grayscale."""
    return lfw.load_lfw(str(synthetic_lfw_dir), str(cache_dir), lfw.Preprocessing(crop=150, size=16, channels=1))


def test_archive_decodes_every_person_and_image(synthetic_faces, synthetic_lfw_dir, cache_dir):
    expected = sum(synthetic.lfw_image_count(i) for i in range(len(synthetic.LFW_PEOPLE)))
    assert synthetic_faces.images.shape == (expected, 16, 16) and synthetic_faces.names == synthetic.LFW_PEOPLE
    assert synthetic_faces.lookup()[("Person_02", 4)] == np.flatnonzero(synthetic_faces.person == 2)[3]
    rgb = lfw.load_lfw(str(synthetic_lfw_dir), str(cache_dir), lfw.Preprocessing(crop=150, size=16, channels=3))
    assert rgb.images.shape == (expected, 16, 16, 3)


def test_protocol_files_resolve_against_the_archive(synthetic_faces, synthetic_lfw_dir):
    pairs = lfw.read_pairs(str(synthetic_lfw_dir), "pairs.txt")
    left, right = lfw.pair_ids(synthetic_faces, pairs)
    same_person = synthetic_faces.person[left] == synthetic_faces.person[right]
    np.testing.assert_array_equal(same_person, pairs.same)
    people = lfw.read_people(str(synthetic_lfw_dir), "people.txt")
    fold_ids = lfw.people_ids(synthetic_faces, people, folds={3})
    assert set(synthetic_faces.person[fold_ids]) == {12, 13, 14, 15}


@pytest.mark.parametrize(
    "line, message",
    [("Person_00\t1\t9", "line 2: Person_00 9: no image Person_00_0009.jpg"),
     ("Nobody\t1\t2", "line 2: Nobody 1: no such person")],
)
def test_pairs_naming_missing_people_or_images(synthetic_faces, line, message):
    pairs = lfw.parse_pairs(f"1\n{line}\nPerson_00\t1\tPerson_01\t1\n", "pairsDevTest.txt")
    with pytest.raises(DataError, match=f"pairsDevTest.txt {message}"):
        lfw.pair_ids(synthetic_faces, pairs)


def test_people_file_count_disagreeing_with_archive(synthetic_faces):
    people = lfw.parse_people("1\nPerson_00\t7\n", "peopleDevTest.txt")
    with pytest.raises(DataError, match="peopleDevTest.txt line 2: Person_00 has 7 images there but 2"):
        lfw.people_ids(synthetic_faces, people)


@pytest.mark.parametrize(
    "data, channels, message",
    [
        (b"not a jpeg", 1, "Person_05_0001.jpg is not an image file"),
        (synthetic.jpeg_bytes(synthetic.face(1), "L")[:300], 1, "cannot decode image .*Person_05_0001.jpg"),
        (synthetic.jpeg_bytes(synthetic.face(1), "L"), 3, "Person_05_0001.jpg is a L image where RGB was expected"),
        (synthetic.jpeg_bytes(synthetic.face(1), "CMYK"), 3, "Person_05_0001.jpg is a CMYK image where RGB"),
    ],
)
def test_bad_images_name_the_file(tmp_path, data, channels, message):
    data_dir = synthetic.make_lfw(tmp_path / "data", bad_image=("Person_05/Person_05_0001.jpg", data))
    with pytest.raises(DataError, match=message):
        lfw.load_lfw(str(data_dir), str(tmp_path / "cache"), lfw.Preprocessing(crop=150, size=16, channels=channels))


def test_grayscale_and_cmyk_photos_load_as_grayscale(tmp_path):
    data = synthetic.jpeg_bytes(synthetic.face(1), "CMYK")
    data_dir = synthetic.make_lfw(tmp_path / "data", bad_image=("Person_05/Person_05_0001.jpg", data))
    faces_l = lfw.load_lfw(str(data_dir), str(tmp_path / "cache"), lfw.Preprocessing(crop=150, size=16, channels=1))
    assert faces_l.images.shape[1:] == (16, 16)


def test_missing_archive_names_the_files_and_folder(tmp_path):
    (tmp_path / "lfw").mkdir()
    with pytest.raises(DataError, match=r"lfw-deepfunneled.tgz, lfw-funneled.tgz, lfw.tgz.*in .*lfw/"):
        lfw.locate_archive(str(tmp_path))


def test_extracted_folder_and_other_variants_are_found(synthetic_lfw_dir, tmp_path):
    import tarfile

    (tmp_path / "lfw").mkdir()
    with tarfile.open(synthetic_lfw_dir / "lfw" / "lfw-deepfunneled.tgz") as tar:
        tar.extractall(tmp_path / "lfw", filter="data")
    shutil.move(tmp_path / "lfw" / "lfw-deepfunneled", tmp_path / "lfw" / "lfw")
    assert lfw.locate_archive(str(tmp_path)) == tmp_path / "lfw" / "lfw"
    dataset = lfw.decode_archive(tmp_path / "lfw" / "lfw", lfw.Preprocessing(crop=150, size=8, channels=1))
    assert len(dataset.names) == len(synthetic.LFW_PEOPLE)


def test_best_threshold_maximises_accuracy_without_splitting_ties():
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
    same = np.array([0, 0, 1, 0, 1, 1], bool)
    threshold = faces.best_threshold(scores, same)
    assert faces.accuracy_at(scores, same, threshold) == pytest.approx(5 / 6)
    assert 0.2 < threshold < 0.3 or 0.6 < threshold < 0.7
    tied = faces.best_threshold(np.array([0.5, 0.5, 0.5, 0.5]), np.array([0, 1, 0, 1], bool))
    assert faces.accuracy_at(np.array([0.5] * 4), np.array([0, 1, 0, 1], bool), tied) == 0.5
    assert faces.best_threshold(np.array([0.1, 0.2]), np.array([1, 1], bool)) < 0.1


def test_view2_threshold_comes_only_from_the_other_folds():
    # Fitted on its own pairs, each fold would score 100%. Fold 0's threshold must come from fold 1
    # (between 0.15 and 0.35), which calls fold 0's 0.3 'same'; fold 1's from fold 0 (between 0.3
    # and 0.8), which calls all of fold 1 'different'.
    same = np.array([1, 1, 0, 0, 1, 1, 0, 0], bool)
    fold = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.9, 0.8, 0.2, 0.3, 0.35, 0.4, 0.1, 0.15])
    result = faces.cross_validate(scores[None], same, fold)
    assert [f["accuracy"] for f in result["per_fold"]] == [0.75, 0.5]
    assert 0.15 < result["per_fold"][0]["threshold"] < 0.35 and 0.3 < result["per_fold"][1]["threshold"] < 0.8
    # With one model per fold, fold k's threshold and scores come from row k: here model 1 scores
    # fold 0 on fold 1's scale, so its threshold suits its test fold.
    model_1 = np.array([0.4, 0.35, 0.1, 0.15, 0.35, 0.4, 0.1, 0.15])
    strict = faces.cross_validate(np.stack([scores, model_1]), same, fold)
    assert [f["accuracy"] for f in strict["per_fold"]] == [0.75, 1.0]
    assert strict["accuracy"] == 0.875 and strict["std_error"] == pytest.approx(np.std([0.75, 1], ddof=1) / np.sqrt(2))


def test_view2_with_given_thresholds_uses_them_for_each_row():
    same = np.array([1, 1, 0, 0, 1, 1, 0, 0], bool)
    fold = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.9, 0.8, 0.2, 0.3, 0.35, 0.4, 0.1, 0.15])
    # One model: its one threshold serves every fold. 0.25 calls fold 0's 0.3 'same' and all of fold 1 right.
    result = faces.cross_validate(scores[None], same, fold, thresholds=[0.25])
    assert [f["accuracy"] for f in result["per_fold"]] == [0.75, 1.0]
    assert [f["threshold"] for f in result["per_fold"]] == [0.25, 0.25]
    # One model per fold: row k's threshold for fold k.
    strict = faces.cross_validate(np.stack([scores, scores]), same, fold, thresholds=[0.5, 0.05])
    assert [f["accuracy"] for f in strict["per_fold"]] == [1.0, 0.5]
    with pytest.raises(ValueError, match="1 thresholds for 2 rows"):
        faces.cross_validate(np.stack([scores, scores]), same, fold, thresholds=[0.5])


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


def test_roc_auc_against_hand_counts():
    scores = np.array([0.9, 0.4, 0.6, 0.4, 0.1])
    positive = np.array([1, 1, 0, 0, 0], bool)
    # Positive 0.9 beats all 3 negatives; 0.4 beats 0.1, ties 0.4 (half), loses to 0.6: (3 + 1.5) / 6.
    assert evaluation.roc_auc(scores, positive) == pytest.approx(4.5 / 6)


def test_contrastive_loss_against_hand_values():
    distance = jnp.array([0.5, 2.0, 0.3, 1.5])
    same = jnp.array([1.0, 1.0, 0.0, 0.0])
    each = [0.5 * 0.25, 0.5 * 4.0, 0.5 * 0.7**2, 0.0]  # Margin 1: the last pair is already beyond it.
    assert float(losses.contrastive_loss(distance, same, 1.0, balanced=False)) == pytest.approx(np.mean(each), rel=1e-5)
    balanced = 0.5 * np.mean(each[:2]) + 0.5 * np.mean(each[2:])
    assert float(losses.contrastive_loss(distance, same, 1.0, balanced=True)) == pytest.approx(balanced, rel=1e-5)


def test_euclidean_head_scores_closer_pairs_higher():
    model = SiameseNet(Encoder(features=(4,), kernel_sizes=(3,), embedding_dim=8, padding="SAME", init_scheme="lecun",
                               embedding="normalize"), head_type="euclidean", margin=1.0)
    variables = init_variables(model, jax.random.PRNGKey(0), (8, 8))
    h = jnp.eye(8)[:3]
    close, far = h[0] * 0.9 + h[1] * 0.1, h[2]
    distance = model.apply(variables, h[0], jnp.stack([close, far]), method=SiameseNet.distance)
    np.testing.assert_allclose(distance, [np.linalg.norm(h[0] - close), np.sqrt(2)], rtol=1e-5)
    logits = model.apply(variables, h[0], jnp.stack([close, far]), method=SiameseNet.score)
    np.testing.assert_allclose(logits, 0.5 - np.asarray(distance), rtol=1e-5)
    embeddings = model.apply(variables, jnp.ones((2, 8, 8)), method=SiameseNet.embed)
    np.testing.assert_allclose(jnp.linalg.norm(embeddings, axis=-1), 1.0, rtol=1e-5)


def test_batch_norm_uses_batch_statistics_in_training_and_running_averages_in_evaluation():
    model = SiameseNet(Encoder(features=(4,), kernel_sizes=(3,), embedding_dim=8, padding="SAME", init_scheme="lecun",
                               norm="batch"))
    variables = init_variables(model, jax.random.PRNGKey(0), (8, 8))
    assert set(variables) == {"params", "batch_stats"}
    images = jax.random.uniform(jax.random.PRNGKey(1), (6, 8, 8))
    out, mutated = model.apply(variables, images, True, method=SiameseNet.embed, mutable=["batch_stats"])
    before = variables["batch_stats"]["encoder"]["norm_0"]["mean"]
    after = mutated["batch_stats"]["encoder"]["norm_0"]["mean"]
    assert not np.allclose(before, after)  # Training moves the running averages...
    train_first = model.apply(variables, images[:3], True, method=SiameseNet.embed, mutable=["batch_stats"])[0]
    assert not np.allclose(train_first, out[:3], atol=1e-5)  # ...and depends on the rest of the batch.
    eval_all = model.apply(variables, images, method=SiameseNet.embed)
    eval_first = model.apply(variables, images[:3], method=SiameseNet.embed)
    np.testing.assert_allclose(eval_first, eval_all[:3], rtol=1e-5)  # Evaluation does not, and mutates nothing.


def test_flip_mirrors_left_right_and_colour_channels_warp_alike():
    config = type("Distortion", (), dict(probability=0.0, rotation=0.0, shear=0.0, scale=(1.0, 1.0),
                                         translation=0.0, flip=1.0))()
    image = jax.random.uniform(jax.random.PRNGKey(0), (9, 9, 3))
    out = augment.augment_image(jax.random.PRNGKey(1), image, config)
    np.testing.assert_allclose(out, image[:, ::-1], atol=1e-5)
    config.flip = 0.0
    np.testing.assert_allclose(augment.augment_image(jax.random.PRNGKey(1), image, config), image, atol=1e-5)


@pytest.fixture(scope="module")
def trained_faces(synthetic_lfw_dir, cache_dir, tmp_path_factory):
    """A tiny View 1 run on the synthetic LFW."""
    workdir = tmp_path_factory.mktemp("lfw_run")
    config = tiny_lfw_config(synthetic_lfw_dir, cache_dir)
    return workdir, config, train.train_and_evaluate(config, str(workdir))


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
    metrics = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2 and all("val_verification_auc" in m for m in metrics)
    # Batch-norm running averages are part of the best checkpoint and restore with it.
    _, variables = workdir_files.restore_model(str(workdir), config, "best")
    assert "batch_stats" in variables


def _evaluate(*flags, env_data=None):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "siamese_jax.evaluate", *flags], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


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


def test_contrastive_loss_needs_the_euclidean_head(synthetic_lfw_dir, cache_dir, tmp_path):
    config = tiny_lfw_config(synthetic_lfw_dir, cache_dir)
    config.model.head = "l1"
    with pytest.raises(ConfigError, match="needs the Euclidean distance head"):
        train.train_and_evaluate(config, str(tmp_path))


def test_real_protocol_files(real_lfw_dir):
    view2 = lfw.read_pairs(str(real_lfw_dir), "pairs.txt")
    assert view2.num_folds == 10 and np.bincount(view2.fold).tolist() == [600] * 10
    assert all(view2.same[view2.fold == k].sum() == 300 for k in range(10))
    assert len(lfw.read_pairs(str(real_lfw_dir), "pairsDevTrain.txt").same) == 2200
    assert len(lfw.read_pairs(str(real_lfw_dir), "pairsDevTest.txt").same) == 1000
    people = lfw.read_people(str(real_lfw_dir), "people.txt")
    assert len(people.names) == 5749 and people.counts.sum() == 13233
    train_people = set(lfw.read_people(str(real_lfw_dir), "peopleDevTrain.txt").names)
    assert len(train_people) == 4038 and not train_people & set(lfw.read_people(str(real_lfw_dir), "peopleDevTest.txt").names)


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


def test_one_command_view2_trains_every_fold_resumes_and_reports(synthetic_lfw_dir, cache_dir, tmp_path, monkeypatch,
                                                                capsys):
    from siamese_jax import lfw_view2

    config = tiny_lfw_config(synthetic_lfw_dir, cache_dir, num_epochs=1)
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


def test_packed_archive_gives_the_same_faces_and_refuses_another_preprocessing(synthetic_lfw_dir, tmp_path):
    prep = lfw.Preprocessing(crop=130, size=40, channels=3)
    source = lfw.locate_archive(str(synthetic_lfw_dir))
    packed_dir = tmp_path / "packed"
    lfw.pack_archive(source, prep, packed_dir / "lfw")
    original = lfw.load_lfw(str(synthetic_lfw_dir), str(tmp_path / "cache"), prep)
    packed = lfw.load_lfw(str(packed_dir), str(tmp_path / "cache"), prep)
    assert packed.source.endswith(lfw.PACKED_ARCHIVE) and packed.names == original.names
    np.testing.assert_array_equal(packed.person, original.person)
    np.testing.assert_array_equal(packed.number, original.number)
    # The same pixels but for JPEG's re-encoding (of noisy synthetic photos: about 4 grey levels),
    # much closer than the next photo, mostly of the same person (about 14).
    error = np.abs(packed.images.astype(int) - original.images.astype(int)).mean()
    assert error < 0.5 * np.abs(np.roll(original.images, 1, axis=0).astype(int) - original.images.astype(int)).mean()
    with pytest.raises(DataError, match="packed for crop 130, size 40, 3 channel"):
        lfw.load_lfw(str(packed_dir), str(tmp_path / "cache"), lfw.Preprocessing(crop=130, size=32, channels=3))
    # Test crops need whole photos: refused when the dataset loads, before any training.
    config = tiny_lfw_config(packed_dir, tmp_path / "cache", image_size=40)
    assert faces.test_crops(config.lfw)  # configs/lfw_cpu.py's.
    with pytest.raises(DataError, match=r"holds the photos at one crop only; config.lfw.test_crops=\(118, 124"):
        faces.Experiment(config).dataset
    config.lfw.test_crops = ()
    assert faces.Experiment(config).dataset.images.shape[1:] == (40, 40, 3)


def test_pack_tool_writes_a_trainable_data_folder_and_refuses_a_packed_source(synthetic_lfw_dir, tmp_path):
    output = tmp_path / "out"
    command = [sys.executable, str(REPO / "benchmarks" / "pack_lfw.py"), "--config=configs/lfw_cpu.py"]
    done = subprocess.run([*command, f"--data_dir={synthetic_lfw_dir}", f"--output_dir={output}"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    files = sorted(p.name for p in (output / "lfw").iterdir())
    assert files == sorted([lfw.PACKED_ARCHIVE, lfw.PACKED_MANIFEST, *lfw.PAIR_FILES, *lfw.PEOPLE_FILES])
    manifest = json.loads((output / "lfw" / lfw.PACKED_MANIFEST).read_text())
    assert (manifest["crop"], manifest["size"], manifest["channels"]) == (130, 32, 3)
    again = subprocess.run([*command, f"--data_dir={output}", f"--output_dir={tmp_path / 'again'}"], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 1 and "packed already" in again.stderr and "Traceback" not in again.stderr


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
    first = experiment.cohort_embeddings(model, variables, None)
    assert experiment.cohort_embeddings(model, variables, None) is first
    assert experiment.cohort_embeddings(model, dict(variables), None) is not first
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
    each = np.stack([np.asarray(evaluation.encode(model, variables, views[:, v], 32)) for v in range(3)], 1)
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
