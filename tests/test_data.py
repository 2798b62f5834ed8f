"""Reading the archives, the cache, the split, and the runs; clear errors for bad files."""

import zipfile
from pathlib import Path

import numpy as np
import pytest

from siamese_jax.data import omniglot
from siamese_jax.data.sources import DATA_DIR_ENV, locate
from siamese_jax.errors import DataError
from tests import synthetic


def test_decodes_layout_and_caches(synthetic_data_dir, tmp_path):
    dataset = omniglot.load_omniglot(str(synthetic_data_dir), str(tmp_path))
    n_alphabets = len(synthetic.BACKGROUND + synthetic.VALIDATION + synthetic.TEST)
    assert dataset.images.shape == (n_alphabets * synthetic.CHARACTERS * synthetic.DRAWERS, 105, 105)
    assert dataset.images.dtype == bool and 0.01 < dataset.images.mean() < 0.5  # Ink is the minority.
    assert dataset.alphabet_sets.count("background") == len(synthetic.BACKGROUND)
    assert len(np.unique(dataset.character)) == n_alphabets * synthetic.CHARACTERS
    assert sorted(np.unique(dataset.drawer)) == list(range(1, 21))
    (cache,) = list(tmp_path.glob("omniglot-*.npz"))
    again = omniglot.load_omniglot(str(synthetic_data_dir), str(tmp_path))
    np.testing.assert_array_equal(again.images, dataset.images)
    np.testing.assert_array_equal(again.character, dataset.character)
    assert again.alphabet_names == dataset.alphabet_names


def test_reads_extracted_folders(synthetic_data_dir, tmp_path):
    for name in omniglot.IMAGE_ARCHIVES:
        with zipfile.ZipFile(synthetic_data_dir / "omniglot" / name) as archive:
            archive.extractall(tmp_path / "omniglot")
    dataset = omniglot.load_omniglot(str(tmp_path), str(tmp_path / "cache"))
    assert len(dataset.images) == (len(synthetic.BACKGROUND) + 4) * synthetic.CHARACTERS * synthetic.DRAWERS


def test_select_applies_split_and_rejects_unknown_names(synthetic_data_dir, cache_dir):
    dataset = omniglot.load_omniglot(str(synthetic_data_dir), str(cache_dir))
    ids = dataset.select("background", (), tuple(range(9, 21)))
    assert len(ids) == len(synthetic.BACKGROUND) * synthetic.CHARACTERS * 12
    assert set(dataset.drawer[ids]) == set(range(9, 21))
    ids = dataset.select("evaluation", ("Val_A",), (1, 2))
    assert {dataset.alphabet_names[a] for a in dataset.alphabet[ids]} == {"Val_A"}
    with pytest.raises(DataError, match=r"unknown alphabet\(s\) \['Klingon'\]"):
        dataset.select("evaluation", ("Klingon",), (1,))
    with pytest.raises(DataError, match="drawers"):
        dataset.select("background", (), (0, 21))


def test_missing_file_names_it_and_where_to_put_it(tmp_path):
    (tmp_path / "omniglot").mkdir()
    with pytest.raises(DataError) as error:
        omniglot.load_omniglot(str(tmp_path), str(tmp_path / "cache"))
    message = str(error.value)
    assert "images_background.zip" in message and "images_evaluation.zip" in message
    assert str(tmp_path / "omniglot") in message


def test_offline_without_data_dir_says_how_to_fix(monkeypatch, tmp_path):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)

    def offline(urls, dataset_name):
        raise ConnectionError("network is unreachable")

    monkeypatch.setattr("siamese_jax.data.sources.download", offline)
    monkeypatch.setattr("siamese_jax.data.sources.unreachable", lambda urls: None)
    with pytest.raises(DataError, match=f"all_runs.zip.*{DATA_DIR_ENV}"):
        locate(None, "omniglot", omniglot.omniglot_urls([omniglot.RUNS_ARCHIVE]))


def test_unresolvable_host_fails_at_once_without_downloading(monkeypatch):
    import socket
    import time

    monkeypatch.delenv(DATA_DIR_ENV, raising=False)

    def no_dns(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    def must_not_download(urls, dataset_name):
        raise AssertionError("the download manager ran although the host does not resolve")

    monkeypatch.setattr("siamese_jax.data.sources.socket.getaddrinfo", no_dns)
    monkeypatch.setattr("siamese_jax.data.sources.download", must_not_download)
    start = time.time()
    with pytest.raises(DataError, match=f"cannot resolve github.com .*no network.*{DATA_DIR_ENV}"):
        locate(None, "omniglot", omniglot.omniglot_urls([omniglot.RUNS_ARCHIVE]))
    assert time.time() - start < 1.0


def test_unreachable_port_is_reported(monkeypatch):
    import socket

    from siamese_jax.data.sources import unreachable

    with socket.socket() as listener:  # A port that was open a moment ago and is closed now.
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
    assert unreachable([f"http://127.0.0.1:{port}/x.zip"], timeout_s=2).startswith(f"cannot connect to 127.0.0.1:{port}")


def test_environment_variable_is_used(monkeypatch, synthetic_data_dir):
    monkeypatch.setenv(DATA_DIR_ENV, str(synthetic_data_dir))
    assert omniglot.locate_runs(None) == synthetic_data_dir / "omniglot" / "all_runs.zip"


def _copy_data_dir(source: Path, target: Path) -> Path:
    (target / "omniglot").mkdir(parents=True)
    for name in omniglot.IMAGE_ARCHIVES + (omniglot.RUNS_ARCHIVE,):
        (target / "omniglot" / name).write_bytes((source / "omniglot" / name).read_bytes())
    return target


def test_truncated_archive_is_reported(synthetic_data_dir, tmp_path):
    data = _copy_data_dir(synthetic_data_dir, tmp_path / "data")
    path = data / "omniglot" / "images_background.zip"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match="images_background.zip.*(truncated or corrupt|corrupt)"):
        omniglot.load_omniglot(str(data), str(tmp_path / "cache"))


def test_corrupt_member_is_reported(synthetic_data_dir, tmp_path):
    data = _copy_data_dir(synthetic_data_dir, tmp_path / "data")
    path = data / "omniglot" / "images_evaluation.zip"
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.infolist()[5]
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 10
    raw[start : start + 20] = bytes(20)
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="images_evaluation.zip.*corrupt"):
        omniglot.load_omniglot(str(data), str(tmp_path / "cache"))


def test_wrong_layout_is_reported(synthetic_data_dir, tmp_path):
    data = _copy_data_dir(synthetic_data_dir, tmp_path / "data")
    with zipfile.ZipFile(data / "omniglot" / "images_background.zip", "w") as archive:
        archive.writestr("readme.txt", "not omniglot")
    with pytest.raises(DataError, match="no images in the Omniglot layout"):
        omniglot.load_omniglot(str(data), str(tmp_path / "cache"))


def test_parses_runs_archive(synthetic_data_dir):
    runs = omniglot.load_runs(synthetic_data_dir / "omniglot" / "all_runs.zip")
    assert runs.names == ("run01", "run02")
    assert runs.support.shape == runs.query.shape == runs.answer.shape == (2, 4)
    assert runs.images.shape == (16, 105, 105)
    # The synthetic labels map item k to class order[k]; answers must index that class's image.
    with zipfile.ZipFile(synthetic_data_dir / "omniglot" / "all_runs.zip") as archive:
        first = archive.read("run01/class_labels.txt").decode().split()[1]
    assert first == f"run01/training/class{runs.answer[0, 0] + 1:02d}.png"


def test_runs_folder_with_any_number_of_runs(synthetic_data_dir, tmp_path):
    with zipfile.ZipFile(synthetic_data_dir / "omniglot" / "all_runs.zip") as archive:
        archive.extractall(tmp_path / "runs", members=[n for n in archive.namelist() if n.startswith("run02/")])
    runs = omniglot.load_runs(tmp_path / "runs")
    assert runs.names == ("run02",) and runs.query.shape == (1, 4)


def test_runs_label_naming_a_missing_image(tmp_path):
    (tmp_path / "run01" / "training").mkdir(parents=True)
    (tmp_path / "run01" / "test").mkdir()
    (tmp_path / "run01" / "training" / "class01.png").write_bytes(synthetic.png_bytes(synthetic.glyph(0)))
    (tmp_path / "run01" / "class_labels.txt").write_text("run01/test/item01.png run01/training/class01.png\n")
    with pytest.raises(DataError, match="item01.png"):
        omniglot.load_runs(tmp_path)


def test_official_runs(real_data_dir):
    runs = omniglot.load_runs(omniglot.locate_runs(str(real_data_dir)))
    assert len(runs.names) == 20 and runs.query.size == 400 and runs.support.shape == (20, 20)
    assert runs.answer[0, 0] == 7  # run01/test/item01.png -> run01/training/class08.png


def test_real_split_sizes(real_data_dir, cache_dir):
    from tests.conftest import load_config

    config = load_config("omniglot")
    dataset = omniglot.load_omniglot(str(real_data_dir), None)
    assert len(dataset.select(config.train.set, config.train.alphabets, config.train.drawers)) == 964 * 12
    val = dataset.select(config.validation.set, config.validation.alphabets, config.validation.drawers)
    test = dataset.select(config.test.set, config.test.alphabets, config.test.drawers)
    assert not set(dataset.character[val]) & set(dataset.character[test])


@pytest.mark.parametrize("name", ["omniglot", "omniglot_cpu", "omniglot_cpu_hour"])
def test_no_image_or_alphabet_of_the_official_runs_is_trained_or_validated_on(real_data_dir, name):
    from tests.conftest import load_config

    config = load_config(name)
    dataset = omniglot.load_omniglot(str(real_data_dir), None)
    runs = omniglot.load_runs(omniglot.locate_runs(str(real_data_dir)))
    digest = lambda image: np.packbits(image).tobytes()  # noqa: E731 - equal pixels, equal digest.
    run_images = {digest(image) for image in runs.images}
    evaluation = dataset.select("evaluation", (), range(1, 21))
    assert run_images <= {digest(dataset.images[i]) for i in evaluation}  # Each found where it came from.
    split_alphabets = set(config.test.alphabets)
    for section in (config.train, config.validation):
        ids = dataset.select(section.set, section.alphabets, section.drawers)
        assert not run_images & {digest(dataset.images[i]) for i in ids}, section
        assert not split_alphabets & {dataset.alphabet_names[a] for a in np.unique(dataset.alphabet[ids])}, section
    # The run alphabets are the test alphabets: every run image's alphabet is one of them.
    by_digest = {digest(dataset.images[i]): dataset.alphabet_names[dataset.alphabet[i]] for i in evaluation}
    assert {by_digest[d] for d in run_images} == split_alphabets


def test_cached_arrays_builds_once_and_rebuilds_a_damaged_cache(tmp_path):
    from siamese_jax.data.sources import cached_arrays

    calls = []

    def build():
        calls.append(1)
        return {"x": np.arange(5), "names": np.array(["a", "b"])}

    path = tmp_path / "sub" / "c.npz"
    first = cached_arrays(path, build)
    again = cached_arrays(path, build)
    assert len(calls) == 1 and again["x"].tolist() == [0, 1, 2, 3, 4] and again["names"].tolist() == ["a", "b"]
    assert first.keys() == again.keys() and not list(path.parent.glob("*.tmp*"))
    path.write_bytes(b"not an npz")
    assert cached_arrays(path, build)["x"].tolist() == [0, 1, 2, 3, 4] and len(calls) == 2


def test_unwritable_cache_is_a_data_error(tmp_path):
    from siamese_jax.data.sources import cached_arrays

    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(DataError, match="cannot write the dataset cache"):
        cached_arrays(blocker / "c.npz", lambda: {"x": np.zeros(1)})
