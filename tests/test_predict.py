"""Predicting on image files: compare, classify, the conversion of any image, and bad input."""

import json
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from siamese_jax import predict
from siamese_jax.data import images as image_files
from siamese_jax.data.omniglot import load_runs
from siamese_jax.errors import DataError
from siamese_jax import experiments
from siamese_jax.experiments.omniglot import runs_trials
from tests import synthetic
from tests.conftest import REPO, exit_message


@pytest.fixture(scope="module")
def predictor(trained_omniglot):
    return predict.Predictor(str(trained_omniglot[1]), "best")


def test_strokes_input_of_an_omniglot_png_is_the_training_input(run01):
    path = run01 / "training" / "class01.png"
    ink = ~np.asarray(Image.open(path).convert("L"), bool)
    for size in (105, 16):
        expected = image_files.to_model_input(ink[None], size)[0]
        np.testing.assert_array_equal(image_files.strokes_input(path.read_bytes(), str(path), size), expected)


def test_strokes_input_puts_ink_bright_whatever_the_polarity(tmp_path):
    ink = synthetic.glyph(3)
    dark_on_light = (~ink).astype(np.uint8) * 255
    for name, pixels, mode in (("a.png", dark_on_light, "L"), ("b.jpg", 255 - dark_on_light, "L"),
                               ("c.png", np.stack([dark_on_light] * 3, -1), "RGB")):
        Image.fromarray(pixels, mode).save(tmp_path / name)
        converted = image_files.strokes_input((tmp_path / name).read_bytes(), name, 35)
        assert converted.shape == (35, 35) and converted.dtype == np.uint8
        assert converted.mean() < 128 and converted.max() > 200, name


def test_compare_is_symmetric_and_identical_images_score_higher(predictor, run01):
    a, b = run01 / "training" / "class01.png", run01 / "training" / "class02.png"
    probability = lambda x, y: predictor.compare(x, y)["probability"]
    assert probability(a, b) == pytest.approx(probability(b, a), abs=1e-6)
    assert probability(a, a) > probability(a, b)
    assert "same" not in predictor.compare(a, b)  # Omniglot runs choose no verification threshold.


def _assert_classify_ranks_as_the_evaluation_scores(predictor, config, run01):
    """predict classify of each query of run01 against its candidates gives every candidate the score the
    evaluation gives it in that trial, and ranks them by it."""
    runs = load_runs(run01.parent)
    log_scores = experiments.build(config).runs_scores(predictor.model, predictor.variables, runs)
    trials = runs_trials(runs)
    for t, query in enumerate(trials.query):
        query_path = run01.parent / _name_of(runs, query)
        ranking = predictor.classify(query_path, run01 / "training")
        scores = {r["class"]: r["log_score"] for r in ranking}
        expected = {_name_of(runs, s).rsplit("/", 1)[-1][:-4]: log_scores[t, n] for n, s in enumerate(trials.support[t, :, 0])}
        assert scores.keys() == expected.keys()
        for name, value in expected.items():
            assert scores[name] == pytest.approx(float(value), abs=1e-5)
        assert [r["log_score"] for r in ranking] == sorted(scores.values(), reverse=True)
        assert all(r["score"] == pytest.approx(np.exp(r["log_score"])) for r in ranking)


def test_classify_agrees_with_the_evaluation_trial_scores(predictor, trained_omniglot, run01):
    _assert_classify_ranks_as_the_evaluation_scores(predictor, trained_omniglot[0], run01)


def test_a_model_of_four_turns_scores_every_candidate_as_the_evaluation_does(trained_omniglot, tmp_path):
    """Five candidates, more than the four turns: each is scored over its turns exactly as a trial scores it."""
    workdir = tmp_path / "turned"
    shutil.copytree(trained_omniglot[1], workdir)
    saved = json.loads((workdir / "config.json").read_text())
    saved["model"]["test_time_turns"] = 4
    (workdir / "config.json").write_text(json.dumps(saved))
    turned = predict.Predictor(str(workdir))
    assert turned.model.test_time_turns == 4
    with zipfile.ZipFile(synthetic.write_runs_of_way(tmp_path / "runs5.zip", 5)) as archive:
        archive.extractall(tmp_path / "runs5", members=[n for n in archive.namelist() if n.startswith("run01/")])
    _assert_classify_ranks_as_the_evaluation_scores(turned, turned.config, tmp_path / "runs5" / "run01")


def _name_of(runs, image_id: int) -> str:
    """The runs-relative file name of a runs image id (load_runs numbers supports, then queries, per run)."""
    support = {int(i): f"run01/training/class{k + 1:02d}.png" for k, i in enumerate(runs.support[0])}
    queries = {int(i): f"run01/test/item{k + 1:02d}.png" for k, i in enumerate(runs.query[0])}
    return {**support, **queries}[int(image_id)]


def test_classify_averages_each_class_subfolder(predictor, run01, tmp_path):
    support = tmp_path / "support"
    for k, name in ((1, "x"), (2, "x"), (3, "y")):
        (support / name).mkdir(parents=True, exist_ok=True)
        shutil.copy(run01 / "training" / f"class{k:02d}.png", support / name / f"{k}.png")
    (support / "y" / "notes.txt").write_text("not an image, ignored")
    query = run01 / "training" / "class01.png"
    ranking = {r["class"]: r for r in predictor.classify(query, support)}
    expected_x = np.mean([predictor.compare(query, run01 / "training" / f"class{k:02d}.png")["probability"]
                          for k in (1, 2)])
    assert ranking["x"]["images"] == 2 and ranking["x"]["score"] == pytest.approx(expected_x, abs=1e-5)
    assert ranking["y"]["images"] == 1


@pytest.mark.parametrize(
    "layout, message",
    [
        ({}, "holds no images"),
        ({"only.png": True}, "holds one class"),
        ({"a/": None, "b/1.png": True}, "a in .* hold no images"),
        ({"a.png": True, "b.png": b"garbage"}, "b.png is not an image file"),
    ],
)
def test_bad_support_folders(predictor, run01, tmp_path, layout, message):
    support = tmp_path / "support"
    support.mkdir()
    for name, content in layout.items():
        path = support / name
        if name.endswith("/"):
            path.mkdir()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is True:
            shutil.copy(run01 / "training" / "class01.png", path)
        else:
            path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        predictor.classify(run01 / "training" / "class01.png", support)


def _run(*args):
    return subprocess.run([sys.executable, "-m", "siamese_jax.predict", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=300)


@pytest.mark.slow
def test_cli_compare_json_and_clear_errors(trained_omniglot, run01, tmp_path):
    workdir = trained_omniglot[1]
    a, b = run01 / "training" / "class01.png", run01 / "test" / "item01.png"
    done = _run("compare", str(a), str(b), f"--workdir={workdir}", "--json")
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout)) == {"a", "b", "probability", "logit"}

    # One failure as a real command: only its whole stderr shows that nothing but the one line is printed.
    (tmp_path / "fake.png").write_text("hello")
    done = _run("compare", str(a), str(tmp_path / "fake.png"), f"--workdir={workdir}")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path / 'fake.png'} is not an image file")

    (tmp_path / "empty").mkdir()
    (tmp_path / "untrained").mkdir()
    shutil.copy(workdir / "config.json", tmp_path / "untrained" / "config.json")
    for args, message in (
        (("compare", str(a), str(tmp_path / "missing.png"), f"--workdir={workdir}"), "missing.png not found"),
        (("compare", str(a), str(b), f"--workdir={tmp_path / 'empty'}"), "config.json not found"),
        (("compare", str(a), str(b), f"--workdir={tmp_path / 'untrained'}"), "no best checkpoint"),
        (("classify", str(a), f"--workdir={workdir}"), "classify needs --support"),
        (("compare", str(a)), "usage:"),
    ):
        assert message in exit_message(predict, *args), args


def test_converter_follows_the_training_config(tmp_path):
    from tests.conftest import load_config

    photo = (np.random.default_rng(0).uniform(size=(40, 60, 3)) * 255).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.jpg")
    config = load_config("folder")
    config.folder.style, config.channels, config.image_size = "photo", 3, 24
    config.folder.path = str(tmp_path)

    def converted(config):
        return experiments.build(config).image_converter()(tmp_path / "photo.jpg").shape

    assert converted(config) == (24, 24, 3)
    config.folder.style, config.channels = "strokes", 1
    assert converted(config) == (24, 24)
    assert converted(load_config("lfw_cpu")) == (32, 32, 3)
