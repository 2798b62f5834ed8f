"""Omniglot: the official archives, decoded once into a compact cache, and Lake's one-shot runs."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from siamese_jax.errors import DataError
from siamese_jax.data.sources import FileTree, cached_arrays, decode_png, cache_file, locate

BASE_URL = "https://github.com/brendenlake/omniglot/raw/master/python/"
IMAGE_ARCHIVES = ("images_background.zip", "images_evaluation.zip")
RUNS_ARCHIVE = "all_runs.zip"
IMAGE_SHAPE = (105, 105)
CACHE_VERSION = 1

_IMAGE_PATH = re.compile(r"(?:^|/)([^/]+)/(character\d+)/(\d+)_(\d+)\.png$")
_LABEL_LINE = re.compile(r"^\s*(\S+)\s+(\S+)\s*$")


@dataclasses.dataclass(frozen=True)
class Omniglot:
    """Every Omniglot image (True = ink) with its alphabet, character and drawer."""

    images: np.ndarray  # bool [N, 105, 105]
    alphabet_names: tuple[str, ...]  # indexed by `alphabet`
    alphabet_sets: tuple[str, ...]  # 'background' or 'evaluation', per alphabet
    alphabet: np.ndarray  # int32 [N]
    character: np.ndarray  # int32 [N], unique over the whole dataset
    drawer: np.ndarray  # int32 [N], 1-based as in the file names

    def select(self, set_name: str, alphabets: Sequence[str], drawers: Sequence[int]) -> np.ndarray:
        """Indices of the images of `set_name` in `alphabets` (all when empty) drawn by `drawers`."""
        in_set = [i for i, s in enumerate(self.alphabet_sets) if s == set_name]
        if not in_set:
            raise DataError(f"unknown Omniglot set {set_name!r}; expected one of {sorted(set(self.alphabet_sets))}")
        if alphabets:
            known = {self.alphabet_names[i]: i for i in in_set}
            unknown = [a for a in alphabets if a not in known]
            if unknown:
                raise DataError(
                    f"unknown alphabet(s) {unknown} in the {set_name} set; known: {sorted(known)}"
                )
            in_set = [known[a] for a in alphabets]
        unknown_drawers = sorted(set(drawers) - set(np.unique(self.drawer).tolist()))
        if unknown_drawers or not drawers:
            raise DataError(
                f"drawers {list(drawers)} are not valid: Omniglot drawers are 1-{int(self.drawer.max())}"
            )
        mask = np.isin(self.alphabet, in_set) & np.isin(self.drawer, list(drawers))
        return np.flatnonzero(mask)


def _cache_key(paths: Sequence[Path]) -> str:
    """A key that changes when any source file or folder changes."""
    digest = hashlib.sha256(str(CACHE_VERSION).encode())
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def decode_archives(paths: dict[str, Path]) -> Omniglot:
    """Decodes the two image archives (zips or extracted folders) into an Omniglot."""
    records = []  # (set, alphabet, character folder, drawer, image)
    for archive in IMAGE_ARCHIVES:
        set_name = archive.split("_")[1].split(".")[0]
        tree = FileTree(paths[archive])
        count = 0
        for name in tree.names():
            match = _IMAGE_PATH.search(name)
            if match is None:
                continue
            alphabet, character, _, drawer = match.groups()
            records.append((set_name, alphabet, character, int(drawer), decode_png(tree, name, IMAGE_SHAPE)))
            count += 1
        if count == 0:
            raise DataError(
                f"{paths[archive]} holds no images in the Omniglot layout "
                "<Alphabet>/characterNN/IIII_DD.png: is it the right archive?"
            )
    records.sort(key=lambda r: (r[0] != "background", r[1], r[2], r[3]))
    alphabet_keys = list(dict.fromkeys((r[0], r[1]) for r in records))
    alphabet_index = {key: i for i, key in enumerate(alphabet_keys)}
    character_index = {key: i for i, key in enumerate(dict.fromkeys((r[0], r[1], r[2]) for r in records))}
    return Omniglot(
        images=np.stack([r[4] for r in records]),
        alphabet_names=tuple(a for _, a in alphabet_keys),
        alphabet_sets=tuple(s for s, _ in alphabet_keys),
        alphabet=np.array([alphabet_index[(r[0], r[1])] for r in records], np.int32),
        character=np.array([character_index[(r[0], r[1], r[2])] for r in records], np.int32),
        drawer=np.array([r[3] for r in records], np.int32),
    )


def _to_arrays(dataset: Omniglot) -> dict[str, np.ndarray]:
    """The cache's arrays (images bit-packed)."""
    return {
        "packed": np.packbits(dataset.images, axis=-1),
        "alphabet_names": np.array(dataset.alphabet_names),
        "alphabet_sets": np.array(dataset.alphabet_sets),
        "alphabet": dataset.alphabet,
        "character": dataset.character,
        "drawer": dataset.drawer,
    }


def _from_arrays(arrays: dict[str, np.ndarray]) -> Omniglot:
    """The dataset of a cache's arrays."""
    return Omniglot(
        images=np.unpackbits(arrays["packed"], axis=-1, count=IMAGE_SHAPE[1]).astype(bool),
        alphabet_names=tuple(arrays["alphabet_names"].tolist()),
        alphabet_sets=tuple(arrays["alphabet_sets"].tolist()),
        alphabet=arrays["alphabet"],
        character=arrays["character"],
        drawer=arrays["drawer"],
    )


def omniglot_urls(names: Sequence[str]) -> dict[str, str]:
    """Download URLs of the official archives."""
    return {name: BASE_URL + name for name in names}


def load_omniglot(data_dir: str | None = None, cache_dir: str | None = None) -> Omniglot:
    """Loads Omniglot from the cache, decoding the official archives on first use."""
    paths = locate(data_dir, "omniglot", omniglot_urls(IMAGE_ARCHIVES))
    cache = cache_file(cache_dir, f"omniglot-{_cache_key([paths[a] for a in IMAGE_ARCHIVES])}.npz")
    return _from_arrays(cached_arrays(cache, lambda: _to_arrays(decode_archives(paths))))


def locate_runs(data_dir: str | None = None) -> Path:
    """Path of the official runs archive (or folder)."""
    return locate(data_dir, "omniglot", omniglot_urls([RUNS_ARCHIVE]))[RUNS_ARCHIVE]


@dataclasses.dataclass(frozen=True)
class OneShotRuns:
    """One-shot runs in Lake's layout: each query must be matched to one of the run's support images."""

    path: str
    names: tuple[str, ...]  # run folder names, e.g. 'run01'
    images: np.ndarray  # bool [M, 105, 105]: every support image, then every query image
    support: np.ndarray  # int32 [R, N]: image ids of each run's support set
    query: np.ndarray  # int32 [R, Q]: image ids of each run's queries
    answer: np.ndarray  # int32 [R, Q]: position in `support` of each query's correct class


def load_runs(path: str | Path) -> OneShotRuns:
    """Parses any zip or folder of runs in the all_runs layout (runNN/{training,test}, class_labels.txt)."""
    tree = FileTree(Path(path))
    names = list(tree.names())
    label_files = sorted(n for n in names if n.rsplit("/", 1)[-1] == "class_labels.txt")
    if not label_files:
        raise DataError(f"{path} holds no runNN/class_labels.txt: not a runs archive in the all_runs layout")
    images, support, query, answer, run_names = [], [], [], [], []
    image_ids: dict[str, int] = {}

    def image_id(full: str, label_file: str) -> int:
        if full not in image_ids:
            if full not in name_set:
                raise DataError(f"{tree.describe(label_file)} names {full}, which is not in {path}")
            image_ids[full] = len(images)
            images.append(decode_png(tree, full, IMAGE_SHAPE))
        return image_ids[full]

    def from_label(prefix: str, relative: str) -> str:
        # Label files name images from the runs root ('run01/test/item01.png').
        return prefix + relative.split("/", 1)[-1]

    name_set = set(names)
    for label_file in label_files:
        prefix = label_file[: -len("class_labels.txt")]
        run_names.append(prefix.rstrip("/").rsplit("/", 1)[-1] or Path(path).stem)
        pairs = []
        for number, line in enumerate(tree.read(label_file).decode("utf-8", "replace").splitlines(), 1):
            if not line.strip():
                continue
            match = _LABEL_LINE.match(line)
            if match is None:
                raise DataError(f"{tree.describe(label_file)} line {number}: expected 'test_image training_image'")
            pairs.append(match.groups())
        if not pairs:
            raise DataError(f"{tree.describe(label_file)} lists no trials")
        support_files = sorted(n for n in names if n.startswith(prefix + "training/") and n.endswith(".png"))
        if not support_files:
            raise DataError(f"{path}: run {prefix or '.'} has no training/*.png support images")
        run_support = [image_id(f, label_file) for f in support_files]
        position = {image: k for k, image in enumerate(run_support)}
        run_query, run_answer = [], []
        for test_file, train_file in pairs:
            run_query.append(image_id(from_label(prefix, test_file), label_file))
            target = image_id(from_label(prefix, train_file), label_file)
            if target not in position:
                raise DataError(f"{tree.describe(label_file)}: {train_file} is not a training image of its run")
            run_answer.append(position[target])
        support.append(run_support)
        query.append(run_query)
        answer.append(run_answer)
    if len({len(s) for s in support}) != 1 or len({len(q) for q in query}) != 1:
        raise DataError(f"{path}: runs differ in their number of support images or queries")
    return OneShotRuns(
        path=str(path),
        names=tuple(run_names),
        images=np.stack(images),
        support=np.array(support, np.int32),
        query=np.array(query, np.int32),
        answer=np.array(answer, np.int32),
    )
