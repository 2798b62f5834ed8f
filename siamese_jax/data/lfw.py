"""Labeled Faces in the Wild: the image archive, decoded once into a cache, and the protocol files."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path

import numpy as np

from siamese_jax.data.images import photo_input
from siamese_jax.data.sources import FileTree, cached_arrays, cache_file, find_in_data_dir, locate, resolve_data_dir
from siamese_jax.errors import DataError

BASE_URL = "http://vis-www.cs.umass.edu/lfw/"
# Any one of these will do; the first found wins. Each may also be its extracted folder. The
# packed archive (pack_archive) holds photos already cropped and resized for one preprocessing.
PACKED_ARCHIVE = "lfw-packed.tgz"
PACKED_MANIFEST = "lfw-packed.json"
ARCHIVES = ("lfw-deepfunneled.tgz", "lfw-funneled.tgz", "lfw.tgz", PACKED_ARCHIVE)
PAIR_FILES = ("pairsDevTrain.txt", "pairsDevTest.txt", "pairs.txt")
PEOPLE_FILES = ("peopleDevTrain.txt", "peopleDevTest.txt", "people.txt")
CACHE_VERSION = 1

_IMAGE_PATH = re.compile(r"(?:^|/)([^/]+)/\1_(\d{4})\.jpg$")


@dataclasses.dataclass(frozen=True)
class LFW:
    """Every LFW image, preprocessed into model input, with its person and image number."""

    images: np.ndarray  # uint8 [N, S, S] (grayscale) or [N, S, S, 3] (RGB)
    names: tuple[str, ...]  # person names, sorted; indexed by `person`
    person: np.ndarray  # int32 [N]
    number: np.ndarray  # int32 [N]: n of Name_%04d.jpg
    source: str  # the archive or folder the images came from

    def lookup(self) -> dict[tuple[str, int], int]:
        """Maps (name, image number) to an image id."""
        return {(self.names[p], int(n)): i for i, (p, n) in enumerate(zip(self.person, self.number))}


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How a 250x250 LFW photo becomes model input."""

    crop: int  # side of the centred square kept, in source pixels
    size: int  # side of the model input
    channels: int  # 1 (grayscale) or 3 (RGB)

    def key(self) -> str:
        """A cache-key fragment."""
        return f"crop{self.crop}-size{self.size}-c{self.channels}"


def preprocessing(config) -> Preprocessing:
    """The Preprocessing a config asks for (config.lfw.crop, config.image_size, config.channels)."""
    if config.channels not in (1, 3):
        raise DataError(f"config.channels must be 1 (grayscale) or 3 (RGB), got {config.channels!r}")
    if not 1 <= config.lfw.crop <= 250:
        raise DataError(f"config.lfw.crop must be a side in 1..250 pixels (LFW photos are 250x250), got {config.lfw.crop}")
    return Preprocessing(crop=int(config.lfw.crop), size=int(config.image_size), channels=int(config.channels))


def decode_face(data: bytes, where: str, prep: Preprocessing) -> np.ndarray:
    """Decodes one photo, crops its centre and resizes it: uint8 [S, S] or [S, S, 3]."""
    return photo_input(data, where, prep.size, prep.channels, prep.crop)


def decode_archive(path: Path, prep: Preprocessing) -> LFW:
    """Decodes every Name/Name_NNNN.jpg of an LFW archive (.tgz or extracted folder)."""
    tree = FileTree(path)
    records = []  # (name, number, pixels), in archive order: tar archives read fast only in order.
    for name in tree.names():
        match = _IMAGE_PATH.search(name)
        if match is not None:
            records.append((match.group(1), int(match.group(2)), decode_face(tree.read(name), tree.describe(name), prep)))
    if not records:
        raise DataError(f"{path} holds no images in the LFW layout <Name>/<Name>_NNNN.jpg: is it the right archive?")
    records.sort(key=lambda r: (r[0], r[1]))
    names = tuple(dict.fromkeys(r[0] for r in records))
    index = {n: i for i, n in enumerate(names)}
    return LFW(
        images=np.stack([r[2] for r in records]),
        names=names,
        person=np.array([index[r[0]] for r in records], np.int32),
        number=np.array([r[1] for r in records], np.int32),
        source=str(path),
    )


def locate_archive(data_dir: str | None) -> Path:
    """The first LFW image archive (or extracted folder) in the data directory, or a downloaded one."""
    root = resolve_data_dir(data_dir)
    if root is not None:
        found = find_in_data_dir(root, "lfw", ARCHIVES)
        # A folder counts only if it holds person folders: DIR/lfw/ itself is where the protocol files
        # live, and it is also what lfw.tgz extracts to.
        hit = next((path for path in found.values()
                    if path is not None and (path.is_file() or any(path.glob("*/*_0001.jpg")))), None)
        if hit is None:
            raise DataError(
                f"no LFW image archive in data directory {root}: put one of {', '.join(ARCHIVES)} (or its "
                f"extracted folder) in {root / 'lfw'}/ (download from {BASE_URL})"
            )
        return hit
    return locate(None, "lfw", {ARCHIVES[0]: BASE_URL + ARCHIVES[0]})[ARCHIVES[0]]


def locate_protocol(data_dir: str | None, name: str) -> Path:
    """Path of one protocol file (pairs*.txt, people*.txt), found or downloaded like the archive."""
    return locate(data_dir, "lfw", {name: BASE_URL + name})[name]


def _cache_key(path: Path, prep: Preprocessing) -> str:
    """Changes when the archive or the preprocessing changes."""
    stat = path.stat()
    text = f"{CACHE_VERSION}|{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{prep.key()}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def pack_archive(source: Path, prep: Preprocessing, folder: Path, quality: int = 90) -> Path:
    """Writes FOLDER/lfw-packed.tgz: every photo of `source` as `prep` makes it, re-encoded as JPEG.

    For machines that only small files can reach: for configs/lfw.py (crop 150, 105x105 grayscale)
    the 13,233 photos took 37 MB instead of 109. A manifest beside it records `prep`, so that the archive is used
    only with the preprocessing it was made for (its photos are then cropped already: a centred
    crop larger than the photo keeps it whole, and the resize to its own size changes nothing).
    """
    import io
    import json
    import tarfile

    from PIL import Image

    dataset = decode_archive(source, prep)
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / PACKED_ARCHIVE
    with tarfile.open(archive, "w:gz") as tar:
        for pixels, person, number in zip(dataset.images, dataset.person, dataset.number):
            name = dataset.names[person]
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
            info = tarfile.TarInfo(f"{name}/{name}_{int(number):04d}.jpg")
            info.size = buffer.tell()
            buffer.seek(0)
            tar.addfile(info, buffer)
    manifest = dict(dataclasses.asdict(prep), quality=quality, source=str(source), images=len(dataset.images))
    (folder / PACKED_MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return archive


def check_packed(path: Path, prep: Preprocessing) -> None:
    """A packed archive serves only the preprocessing it was made for: anything else is a clear error."""
    import json

    manifest_path = path.parent / PACKED_MANIFEST
    if not manifest_path.is_file():
        raise DataError(f"{path} has no {PACKED_MANIFEST} beside it: pack it again (benchmarks/pack_lfw.py)")
    manifest = json.loads(manifest_path.read_text())
    packed = Preprocessing(manifest["crop"], manifest["size"], manifest["channels"])
    if packed != prep:
        raise DataError(
            f"{path} was packed for crop {packed.crop}, size {packed.size}, {packed.channels} channel(s); the config "
            f"asks for crop {prep.crop}, size {prep.size}, {prep.channels}: pack it again with these "
            "(benchmarks/pack_lfw.py --config=...) or use the original archive"
        )


def load_lfw(data_dir: str | None, cache_dir: str | None, prep: Preprocessing) -> LFW:
    """Loads LFW from the cache, decoding the archive on first use (about a minute)."""
    path = locate_archive(data_dir)
    if path.name == PACKED_ARCHIVE:
        check_packed(path, prep)
    cache = cache_file(cache_dir, f"lfw-{prep.key()}-{_cache_key(path, prep)}.npz")

    def decode() -> dict[str, np.ndarray]:
        dataset = decode_archive(path, prep)
        return {"images": dataset.images, "names": np.array(dataset.names), "person": dataset.person,
                "number": dataset.number}

    arrays = cached_arrays(cache, decode)
    return LFW(arrays["images"], tuple(arrays["names"].tolist()), arrays["person"], arrays["number"], str(path))


@dataclasses.dataclass(frozen=True)
class PairList:
    """The pairs of a pairs*.txt file, in file order, with the fold and line of each."""

    source: str
    name1: tuple[str, ...]
    number1: np.ndarray  # int32 [P]
    name2: tuple[str, ...]
    number2: np.ndarray  # int32 [P]
    same: np.ndarray  # bool [P]
    fold: np.ndarray  # int32 [P]: 0 for View 1 files, 0-9 for pairs.txt
    line: np.ndarray  # int32 [P]: 1-based line number, for error messages

    @property
    def num_folds(self) -> int:
        """How many folds (sets) the file holds."""
        return int(self.fold.max()) + 1


@dataclasses.dataclass(frozen=True)
class PeopleList:
    """The people of a people*.txt file, with their image counts, folds and lines."""

    source: str
    names: tuple[str, ...]
    counts: np.ndarray  # int32
    fold: np.ndarray  # int32
    line: np.ndarray  # int32


def _integers(line: str) -> list[int] | None:
    """The whitespace-separated integers of a line, or None if any field is not one."""
    try:
        return [int(f) for f in line.split()]
    except ValueError:
        return None


def _header(lines: list[str], source: str, what: str) -> list[int]:
    """The integers of a protocol file's first line."""
    header = _integers(lines[0]) if lines else None
    if not header or len(header) > 2 or min(header) < 1:
        raise DataError(f"{source} line 1: expected {what}, got {lines[0][:80] if lines else 'an empty file'!r}")
    return header


def _body(text: str) -> list[str]:
    """The lines of a file without trailing blank lines."""
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _number(field: str, source: str, line: int) -> int:
    """An image number field, which must be a positive integer."""
    if not field.isdigit() or int(field) < 1:
        raise DataError(f"{source} line {line}: image number {field!r} is not a positive integer")
    return int(field)


def parse_pairs(text: str, source: str) -> PairList:
    """Parses pairs.txt ('10<TAB>300' header) or pairsDev*.txt ('1100' header).

    Each fold holds `n` matched lines (Name n1 n2) and then `n` mismatched lines (Name1 n1 Name2 n2).
    """
    lines = _body(text)
    header = _header(lines, source, "'folds<TAB>pairs' or 'pairs'")
    folds, per_fold = header if len(header) == 2 else (1, header[0])
    expected = folds * 2 * per_fold
    if len(lines) - 1 != expected:
        raise DataError(
            f"{source}: the header promises {folds} fold(s) of {per_fold} matched + {per_fold} mismatched pairs "
            f"({expected} lines), but {len(lines) - 1} follow"
        )
    name1, number1, name2, number2, same, fold, line_numbers = [], [], [], [], [], [], []
    for offset, line in enumerate(lines[1:]):
        number = offset + 2
        k, position = divmod(offset, 2 * per_fold)
        matched = position < per_fold
        fields = line.split()
        if matched and len(fields) != 3:
            raise DataError(f"{source} line {number}: expected a matched pair 'Name<TAB>n1<TAB>n2', got {line[:80]!r}")
        if not matched and len(fields) != 4:
            raise DataError(
                f"{source} line {number}: expected a mismatched pair 'Name1<TAB>n1<TAB>Name2<TAB>n2', got {line[:80]!r}"
            )
        a, na, b, nb = (fields[0], fields[1], fields[0], fields[2]) if matched else fields
        name1.append(a)
        number1.append(_number(na, source, number))
        name2.append(b)
        number2.append(_number(nb, source, number))
        same.append(matched)
        fold.append(k)
        line_numbers.append(number)
    return PairList(source, tuple(name1), np.array(number1, np.int32), tuple(name2), np.array(number2, np.int32),
                    np.array(same, bool), np.array(fold, np.int32), np.array(line_numbers, np.int32))


def parse_people(text: str, source: str) -> PeopleList:
    """Parses people.txt ('10' header, then per fold a count line and its people) or peopleDev*.txt ('N' header)."""
    lines = _body(text)
    header = _header(lines, source, "a count")
    if len(header) != 1:
        raise DataError(f"{source} line 1: expected a single count, got {lines[0][:80]!r}")
    # people.txt's second line is the first fold's count; peopleDev*.txt's is already a person.
    multi_fold = len(lines) > 1 and _integers(lines[1]) is not None and len(lines[1].split()) == 1
    names, counts, folds, line_numbers = [], [], [], []
    cursor = 1
    for k in range(header[0] if multi_fold else 1):
        if multi_fold:
            if cursor >= len(lines) or _integers(lines[cursor]) is None or len(lines[cursor].split()) != 1:
                raise DataError(f"{source} line {cursor + 1}: expected the number of people in fold {k + 1}")
            size = _integers(lines[cursor])[0]
            cursor += 1
        else:
            size = header[0]
        for _ in range(size):
            if cursor >= len(lines):
                raise DataError(f"{source}: ends at line {len(lines)}, inside fold {k + 1} (expected {size} people)")
            fields = lines[cursor].split()
            if len(fields) != 2:
                raise DataError(f"{source} line {cursor + 1}: expected 'Name<TAB>count', got {lines[cursor][:80]!r}")
            names.append(fields[0])
            counts.append(_number(fields[1], source, cursor + 1))
            folds.append(k)
            line_numbers.append(cursor + 1)
            cursor += 1
    if cursor != len(lines):
        raise DataError(f"{source} line {cursor + 1}: more lines than the counts announce")
    return PeopleList(source, tuple(names), np.array(counts, np.int32), np.array(folds, np.int32),
                      np.array(line_numbers, np.int32))


def read_pairs(data_dir: str | None, name: str) -> PairList:
    """Finds and parses one pairs file."""
    path = locate_protocol(data_dir, name)
    return parse_pairs(path.read_text(encoding="utf-8", errors="replace"), str(path))


def read_people(data_dir: str | None, name: str) -> PeopleList:
    """Finds and parses one people file."""
    path = locate_protocol(data_dir, name)
    return parse_people(path.read_text(encoding="utf-8", errors="replace"), str(path))


def pair_ids(dataset: LFW, pairs: PairList) -> tuple[np.ndarray, np.ndarray]:
    """Image ids of both sides of every pair; a person or image the archive lacks is an error."""
    lookup = dataset.lookup()
    known = set(dataset.names)
    sides = []
    for names, numbers in ((pairs.name1, pairs.number1), (pairs.name2, pairs.number2)):
        ids = np.empty(len(names), np.int32)
        for i, (name, number) in enumerate(zip(names, numbers)):
            found = lookup.get((name, int(number)))
            if found is None:
                why = "no such person" if name not in known else f"no image {name}_{int(number):04d}.jpg"
                raise DataError(f"{pairs.source} line {int(pairs.line[i])}: {name} {int(number)}: {why} in {dataset.source}")
            ids[i] = found
        sides.append(ids)
    return sides[0], sides[1]


def people_ids(dataset: LFW, people: PeopleList, folds=None) -> np.ndarray:
    """Image ids of every image of the listed people (of `folds` only, if given), checked against the archive."""
    index = {name: i for i, name in enumerate(dataset.names)}
    counts = np.bincount(dataset.person, minlength=len(dataset.names))
    chosen = []
    for name, count, fold, line in zip(people.names, people.counts, people.fold, people.line):
        if folds is not None and int(fold) not in folds:
            continue
        if name not in index:
            raise DataError(f"{people.source} line {int(line)}: {name} is not in {dataset.source}")
        if counts[index[name]] != count:
            raise DataError(
                f"{people.source} line {int(line)}: {name} has {int(count)} images there but "
                f"{int(counts[index[name]])} in {dataset.source}"
            )
        chosen.append(index[name])
    return np.flatnonzero(np.isin(dataset.person, chosen))
