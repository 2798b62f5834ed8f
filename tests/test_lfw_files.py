"""LFW files: the protocol files, the archive and its variants, the packed archive."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from siamese_jax.experiments import lfw as faces
from siamese_jax.data import lfw
from siamese_jax.errors import DataError
from tests import synthetic
from tests.conftest import REPO, tiny_lfw_config


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
    ],
)
def test_bad_images_name_the_file(tmp_path, data, channels, message):
    data_dir = synthetic.make_lfw(tmp_path / "data", bad_image=("Person_05/Person_05_0001.jpg", data))
    with pytest.raises(DataError, match=message):
        lfw.load_lfw(str(data_dir), str(tmp_path / "cache"), lfw.Preprocessing(crop=150, size=16, channels=channels))


def test_cmyk_photos_load_as_grayscale_and_as_colour(tmp_path):
    data = synthetic.jpeg_bytes(synthetic.face(1), "CMYK")
    data_dir = synthetic.make_lfw(tmp_path / "data", bad_image=("Person_05/Person_05_0001.jpg", data))
    faces_l = lfw.load_lfw(str(data_dir), str(tmp_path / "cache"), lfw.Preprocessing(crop=150, size=16, channels=1))
    assert faces_l.images.shape[1:] == (16, 16)
    faces_rgb = lfw.load_lfw(str(data_dir), str(tmp_path / "cache"), lfw.Preprocessing(crop=150, size=16, channels=3))
    assert faces_rgb.images.shape[1:] == (16, 16, 3)


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


@pytest.mark.slow
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
