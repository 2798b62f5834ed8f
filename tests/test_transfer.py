"""MNIST transfer: idx parsing, the nearest-neighbour baseline, and the evaluation on synthetic and real files."""

import gzip
import json
import subprocess
import sys

import numpy as np
import pytest

from siamese_jax import transfer
from siamese_jax.data import mnist
from siamese_jax.errors import DataError
from siamese_jax.tasks import Trials
from tests import synthetic
from tests.conftest import REPO, real_data


def test_idx_parsing_gzip_or_raw():
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = synthetic.idx_bytes(images, 2051)
    for data in (raw, gzip.compress(raw)):
        np.testing.assert_array_equal(mnist.parse_idx(data, "x", 2051), images)
    labels = np.array([3, 1, 4], np.uint8)
    np.testing.assert_array_equal(mnist.parse_idx(synthetic.idx_bytes(labels, 2049), "y", 2049), labels)


@pytest.mark.parametrize(
    "data, magic, message",
    [
        (synthetic.idx_bytes(np.zeros(3, np.uint8), 2049), 2051, "magic number 2049, expected 2051"),
        (synthetic.idx_bytes(np.zeros((2, 3, 4), np.uint8), 2051)[:-1], 2051, r"23 bytes of data.*shape \(2, 3, 4\)"),
        (b"\x1f\x8b\x08garbage", 2051, "damaged gzip"),
        (b"", 2049, "magic number None"),
    ],
)
def test_idx_errors(data, magic, message):
    with pytest.raises(DataError, match=message):
        mnist.parse_idx(data, "t10k.gz", magic)


def test_nearest_neighbour_picks_the_identical_image():
    images = np.random.default_rng(0).integers(0, 256, (12, 8, 8)).astype(np.uint8)
    trials = Trials(support=np.array([[[0], [1], [2]], [[3], [4], [5]]], np.int32), query=np.array([1, 5], np.int32),
                    answer=np.array([1, 2], np.int32), group=np.zeros(2, np.int32))
    scores = transfer.nearest_neighbour_scores(images, trials, chunk=1)
    assert scores.shape == (2, 3) and np.argmax(scores, 1).tolist() == [1, 2] and scores[0, 1] == 0


def test_mnist_trials_use_every_class_once():
    labels = np.repeat(np.arange(10), 5)
    trials = transfer.mnist_trials(labels, tasks=30, seed=0)
    support_classes = labels[trials.support[:, :, 0]]
    assert all(sorted(row) == list(range(10)) for row in support_classes)
    assert (labels[trials.query] == support_classes[np.arange(30), trials.answer]).all()
    assert not (trials.support[:, :, 0] == trials.query[:, None]).any()


@pytest.mark.slow
def test_evaluate_command_with_mnist(trained_omniglot, synthetic_data_dir, tmp_path):
    _, workdir, _ = trained_omniglot
    data_dir = synthetic.make_mnist(tmp_path / "data")
    (data_dir / "omniglot").symlink_to(synthetic_data_dir / "omniglot")
    output = tmp_path / "eval.json"
    done = subprocess.run(
        [sys.executable, "-m", "siamese_jax.evaluate", f"--workdir={workdir}", f"--output={output}", "--mnist",
         "--mnist_tasks=50", "--tasks=10", f"--data_dir={data_dir}"],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(output.read_text())["mnist"]
    assert result["way"] == 10 and result["model"]["trials"] == result["nearest_neighbour"]["trials"] == 50
    assert "1-nearest neighbour" in done.stdout
    # The synthetic digits are shifted copies of one glyph per class: pixels alone do well.
    assert result["nearest_neighbour"]["accuracy"] > 0.3


def test_missing_mnist_names_the_file(tmp_path):
    with pytest.raises(DataError, match=r"missing t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz .*/mnist/"):
        mnist.load_mnist_test(str(tmp_path))


def test_real_mnist_test_set():
    images, labels = mnist.load_mnist_test(str(real_data("mnist", mnist.TEST_IMAGES, "MNIST")))
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist()[:3] == [980, 1135, 1032] and labels.max() == 9
    # White digits on black: the border is background.
    assert images[:, 0, :].mean() < 1 and images.mean() > 20

