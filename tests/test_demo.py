"""The live demo: its scripting API agrees with predict, bad input is a message and the server keeps serving,
and in a real browser a drawn character is classified against an official run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from siamese_jax import experiments, predict
from siamese_jax.data.omniglot import load_runs, locate_runs
from siamese_jax.experiments.omniglot import runs_trials
from tests.conftest import REPO, free_port, load_config

pytestmark = pytest.mark.slow  # A server, a client and a browser.
gradio_client = pytest.importorskip("gradio_client")


@pytest.fixture(scope="module")
def demo_workdir(trained_omniglot, tmp_path_factory):
    """The tiny trained run scored under four test-time turns, as the CPU configs score, looking at the real
    official runs (20-way) when they are there, else the synthetic ones: (workdir, runs archive)."""
    _, workdir, _ = trained_omniglot
    copy = tmp_path_factory.mktemp("demo") / "run"
    shutil.copytree(workdir, copy)
    real = Path(os.environ.get("SIAMESE_JAX_DATA_DIR", "/nonexistent")) / "omniglot" / "all_runs.zip"
    config = json.loads((copy / "config.json").read_text())
    config["model"]["test_time_turns"] = 4
    if real.exists():
        config["data_dir"] = str(real.parent.parent)
    (copy / "config.json").write_text(json.dumps(config))
    return copy, locate_runs(config["data_dir"])


@pytest.fixture(scope="module")
def served(demo_workdir):
    """The demo app on a free local port, in this process: (url, Demo)."""
    from siamese_jax import demo

    workdir, _ = demo_workdir
    session = demo.Demo(str(workdir))
    blocks = demo.build_app(session)
    port = free_port()
    blocks.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                  max_file_size=demo.MAX_UPLOAD_BYTES)
    yield f"http://127.0.0.1:{port}/", session
    blocks.close()


def _png(path: Path, ink: np.ndarray) -> Path:
    Image.fromarray(np.where(ink, 0, 255).astype(np.uint8)).save(path)
    return path


def test_classify_api_on_a_real_query_agrees_with_predict_classify_on_the_same_files(served, demo_workdir, tmp_path):
    url, _ = served
    workdir, runs_path = demo_workdir
    runs = load_runs(runs_path)
    support = tmp_path / "run01"
    support.mkdir()
    for position, image in enumerate(runs.support[0]):  # The run's candidates, named as the demo names them.
        _png(support / f"candidate_{position + 1:02d}.png", runs.images[image])
    query = _png(tmp_path / "query.png", runs.images[runs.query[0, 0]])
    client = gradio_client.Client(url, verbose=False)
    by_name = client.predict(gradio_client.handle_file(str(query)), "run01", api_name="/classify")
    predictor = predict.Predictor(str(workdir))
    expected = predictor.classify(query, support)
    assert list(by_name) == [r["class"] for r in expected]  # Ranked alike, best first.
    assert list(by_name.values()) == pytest.approx([r["score"] for r in expected], rel=1e-5, abs=1e-7)
    assert len(by_name) == runs.support.shape[1] and all(0.0 <= p <= 1.0 for p in by_name.values())
    # Every candidate scored as the evaluation scores run 1's first trial, under the model's four turns.
    assert predictor.model.test_time_turns == 4
    trials = runs_trials(runs)
    assert trials.query[0] == runs.query[0, 0] and list(trials.support[0, :, 0]) == list(runs.support[0])
    log_scores = experiments.build(predictor.config).runs_scores(predictor.model, predictor.variables, runs)[0]
    evaluated = {f"candidate_{n + 1:02d}": float(np.exp(score)) for n, score in enumerate(log_scores)}
    assert by_name == pytest.approx(evaluated, rel=1e-4, abs=1e-7)
    assert list(by_name) == sorted(evaluated, key=lambda name: -evaluated[name])
    by_folder = client.predict(gradio_client.handle_file(str(query)), str(support), api_name="/classify")
    assert by_folder == pytest.approx(by_name, rel=1e-5, abs=1e-7)
    compared = client.predict(gradio_client.handle_file(str(query)), gradio_client.handle_file(str(query)),
                              api_name="/compare")
    assert 0.0 <= compared["probability"] <= 1.0 and compared["probability"] == pytest.approx(
        1 / (1 + np.exp(-compared["logit"])))


def _bomb(path: Path) -> Path:
    Image.new("1", (20_000, 20_000)).save(path)
    return path


@pytest.mark.parametrize("make, message", [
    (lambda p: (p.write_bytes(b"%PDF-1.4 not an image"), p)[1], "is not an image file"),
    (lambda p: (p.write_bytes(_png(p.with_suffix(".ok.png"), np.eye(50, dtype=bool)).read_bytes()[:80]), p)[1],
     "cannot decode image"),
    (_bomb, "is 20,000 x 20,000 pixels, more than the 40,000,000"),
])
def test_a_bad_query_file_is_a_clear_message_and_the_server_keeps_serving(served, make, message, tmp_path):
    url, _ = served
    client = gradio_client.Client(url, verbose=False)
    bad = make(tmp_path / "query.png")
    with pytest.raises(Exception, match=message):
        client.predict(gradio_client.handle_file(str(bad)), "run01", api_name="/classify")
    good = _png(tmp_path / "good.png", np.eye(50, dtype=bool))
    assert len(client.predict(gradio_client.handle_file(str(good)), "run01", api_name="/classify")) >= 2


def test_a_support_folder_of_one_class_and_an_unknown_set_are_clear_messages(served, tmp_path):
    url, _ = served
    client = gradio_client.Client(url, verbose=False)
    query = _png(tmp_path / "query.png", np.eye(50, dtype=bool))
    lonely = tmp_path / "one"
    lonely.mkdir()
    _png(lonely / "a.png", np.eye(50, dtype=bool))
    with pytest.raises(Exception, match="holds one class .*classifying needs two or more"):
        client.predict(gradio_client.handle_file(str(query)), str(lonely), api_name="/classify")
    with pytest.raises(Exception, match="unknown support set 'run99'"):
        client.predict(gradio_client.handle_file(str(query)), "run99", api_name="/classify")


def test_an_empty_canvas_and_a_one_class_upload_are_clear_messages(served, tmp_path):
    from siamese_jax.errors import UserError

    _, session = served
    blank = np.zeros((300, 300, 4), np.uint8)  # A transparent page, as an untouched sketchpad gives.
    with pytest.raises(UserError, match="the canvas is empty: draw a character first"):
        session.convert_drawing({"background": None, "layers": [blank], "composite": blank})
    with pytest.raises(UserError, match="needs two or more classes"):
        session.classify_files(session.convert_file(_png(tmp_path / "q.png", np.eye(40, dtype=bool))),
                               [_png(tmp_path / "a.png", np.eye(40, dtype=bool))])
    drawn = blank.copy()
    drawn[60:240, 120:180] = (0, 0, 0, 255)  # A black bar on the transparent page.
    converted = session.convert_drawing({"composite": drawn})
    side = converted.shape[0]
    # Ink bright on black, as in training: the bar's middle is full ink, the page's corner background.
    assert converted[side // 2, side // 2] == 255 and converted[0, 0] == 0


def test_a_workdir_without_a_checkpoint_is_one_line_naming_the_training_command(tmp_path):
    (tmp_path / "config.json").write_text(load_config("omniglot_cpu").to_json())  # A run that never saved.
    done = subprocess.run([sys.executable, "-m", "siamese_jax.demo", f"--workdir={tmp_path}"], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {tmp_path} has no trained checkpoint to show")
    assert line.endswith(f"python -m siamese_jax.train --config=configs/omniglot_cpu.py --workdir={tmp_path}")


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("no Chromium on PATH: install Debian's 'chromium' package (.ci/run does)")
    return path


def test_in_a_browser_a_drawn_character_is_ranked_against_run_1(served, demo_workdir, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    url, _ = served
    runs = load_runs(demo_workdir[1])
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        page.goto(url)
        page.wait_for_selector("#candidates img", timeout=60_000)  # run01's candidates, shown on load.
        page.locator("#classify").click()  # Nothing drawn yet: a message, not a crash.
        page.get_by_text("the canvas is empty: draw a character first").first.wait_for(timeout=30_000)
        page.locator('#sketch button[aria-label="Brush"]').click()  # The pad asks for its draw tool first.
        canvas = page.locator("#sketch canvas").first
        box = canvas.bounding_box()
        x, y, w, h = box["x"], box["y"], box["width"], box["height"]
        for start, end in (((0.3, 0.3), (0.7, 0.7)), ((0.7, 0.3), (0.3, 0.7)), ((0.5, 0.2), (0.5, 0.8))):
            page.mouse.move(x + start[0] * w, y + start[1] * h)
            page.mouse.down()
            page.mouse.move(x + end[0] * w, y + end[1] * h, steps=12)
            page.mouse.up()
        page.locator("#classify").click()
        page.locator("#verdict strong").first.wait_for(timeout=60_000)
        rows = page.locator("#scores .confidence-set")
        rows.first.wait_for(timeout=30_000)
        texts = rows.all_inner_texts()
        shot = tmp_path / "demo.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    classes = runs.support.shape[1]
    assert len(texts) == classes, texts
    names, probabilities = [], []
    for text in texts:
        name, value = [part.strip() for part in text.splitlines() if part.strip()][:2]
        names.append(name)
        probabilities.append(float(value.rstrip("%")) / 100)
    assert sorted(names) == [f"candidate_{n + 1:02d}" for n in range(classes)]
    assert all(0.0 <= p <= 1.0 for p in probabilities) and probabilities == sorted(probabilities, reverse=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("SIAMESE_JAX_DEMO_SCREENSHOT"):  # Where the README's picture comes from.
        shutil.copy(shot, os.environ["SIAMESE_JAX_DEMO_SCREENSHOT"])


def test_latency_benchmark_runs_and_writes_its_json(demo_workdir, tmp_path):
    workdir, _ = demo_workdir
    output = tmp_path / "latency.json"
    done = subprocess.run([sys.executable, "benchmarks/demo_latency.py", f"--workdir={workdir}", "--queries=3",
                           f"--output={output}"], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert done.returncode == 0, done.stderr
    result = json.loads(output.read_text())
    assert result["startup_s"] > 0 and result["candidates"] == result["classes_in_last_answer"] >= 2
    for key in ("model_per_query", "http_per_query"):
        assert result[key]["count"] == 3 and 0 < result[key]["median_ms"] <= result[key]["p90_ms"]
    assert result["commit"] and result["device"].startswith("cpu")


def test_omniglot_offers_the_official_runs_and_random_tasks_of_the_test_alphabets(trained_omniglot):
    from siamese_jax import experiments

    config, _, _ = trained_omniglot
    experiment = experiments.build(config)
    sets = experiment.support_sets()
    assert list(sets) == ["run01", "run02", "random 5-way", "random 10-way", "random 20-way"]  # 2 synthetic runs.
    run = sets["run02"]()
    runs = experiment.official_runs
    np.testing.assert_array_equal(run.images, experiment.prepare(runs.images[runs.support[1]]))
    np.testing.assert_array_equal(run.answers, runs.answer[1])
    task = sets["random 5-way"]()  # The synthetic test alphabets have 5 characters each.
    split = experiment.split(config.test)
    alphabet = task.names[0].rsplit("_", 1)[0]
    assert alphabet in config.test.alphabets and all(name.startswith(alphabet) for name in task.names)
    assert len(task.images) == len(task.queries) == 5 and list(task.answers) == list(range(5))
    # Each query is another drawing of its candidate's character.
    assert not any(np.array_equal(q, c) for q, c in zip(task.queries, task.images))
    assert len(split.indices) > 5
    from siamese_jax.errors import DataError

    with pytest.raises(DataError, match="has 10 classes for 10-way trials"):
        sets["random 10-way"]()


@pytest.mark.slow
def test_a_long_run_of_uploads_leaves_the_cache_bounded(served, tmp_path):
    from siamese_jax import demo

    _, session = served
    blocks = demo.build_app(session, keep_uploads_s=1)
    port = free_port()
    blocks.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)
        cached = []
        for i in range(12):  # Over about six seconds, a new image each time: a new file in the cache.
            image = _png(tmp_path / f"upload_{i}.png", np.roll(np.eye(50, dtype=bool), i, axis=1))
            client.predict(gradio_client.handle_file(str(image)), gradio_client.handle_file(str(image)),
                           api_name="/compare")
            cached.append(len({f for files in blocks.temp_file_sets for f in files if Path(f).exists()}))
            time.sleep(0.5)  # Paces the uploads over six seconds, past the age of the first ones.
        # Then every upload goes, once past the age, at the next deletion pass: waited for, within a deadline.
        deadline = time.monotonic() + 60
        while (left := [f for files in blocks.temp_file_sets for f in files if Path(f).exists()]) and \
                time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        blocks.close()
    assert max(cached) <= 6  # Never all 12 at once: the old ones went while new ones came (Gradio keeps all).
    assert left == []
