"""Your own dataset: a folder of class subfolders (optionally grouped one level above, like alphabets).

    ROOT/<class>/<image>             flat: one group holding every class
    ROOT/<group>/<class>/<image>     grouped: different pairs and test tasks stay within a group

Images are converted as `style` says: 'strokes' (drawn symbols, like Omniglot: the lighter
polarity is the background, ink becomes bright) or 'photo' (centre square, grayscale or RGB).
The decoded images are cached, keyed by every file's path, size and modification time.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np

from siamese_jax.data.images import IMAGE_SUFFIXES, photo_input, strokes_input
from siamese_jax.data.sources import cached_arrays, cache_file
from siamese_jax.errors import ConfigError, DataError

STYLES = ("strokes", "photo")
SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class ImageFolder:
    """Every image of a class folder tree as model input, with its class and group."""

    images: np.ndarray  # uint8 [N, S, S(, C)]
    label: np.ndarray  # int32 [N]: index into class_names
    group: np.ndarray  # int32 [N]: index into group_names
    class_names: tuple[str, ...]  # 'class' (flat) or 'group/class'
    group_names: tuple[str, ...]
    root: str


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def scan(root: Path) -> list[tuple[str, str, list[Path]]]:
    """(group, class, image paths) of every class under root; flat trees have one group named ''."""
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist or is not a folder (config.folder.path)")
    top = _visible_dirs(root)
    if not top:
        raise DataError(f"{root} holds no subfolders: put one subfolder of images per class in it "
                        "(or one subfolder per group, each holding class subfolders)")
    flat = [d for d in top if _images_in(d)]
    grouped = [d for d in top if not _images_in(d) and _visible_dirs(d)]
    if flat and grouped:
        raise DataError(f"{root} mixes class folders (e.g. {flat[0].name}/ holds images) and group folders (e.g. "
                        f"{grouped[0].name}/ holds class folders): use one layout")
    classes = [("", d.name, _images_in(d)) for d in flat] if flat else [
        (g.name, c.name, _images_in(c)) for g in grouped for c in _visible_dirs(g)
    ]
    empty = [f"{g}/{c}".lstrip("/") for g, c, paths in classes if not paths]
    if empty or not classes:
        raise DataError(f"class folder(s) {', '.join(empty[:5]) or '(none)'} under {root} hold no images "
                        f"({', '.join(IMAGE_SUFFIXES)})")
    return classes


def _cache_key(classes, style: str, size: int, channels: int) -> str:
    digest = hashlib.sha256(f"{style}|{size}|{channels}".encode())
    for _, _, paths in classes:
        for path in paths:
            stat = path.stat()
            digest.update(f"|{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def load_image_folder(root: str, style: str, size: int, channels: int, cache_dir: str | None = None) -> ImageFolder:
    """Decodes (or loads from the cache) every image of a class folder tree."""
    check_settings(style, channels)
    root_path = Path(root).expanduser()
    classes = scan(root_path)
    groups = tuple(dict.fromkeys(g for g, _, _ in classes))
    class_names = tuple(f"{g}/{c}" if g else c for g, c, _ in classes)
    cache = cache_file(cache_dir, f"folder-{root_path.name}-{_cache_key(classes, style, size, channels)}.npz")
    convert = ((lambda data, where: strokes_input(data, where, size)) if style == "strokes"
               else (lambda data, where: photo_input(data, where, size, channels)))

    def decode() -> dict[str, np.ndarray]:
        images, label, group = [], [], []
        for k, (g, _, paths) in enumerate(classes):
            for path in paths:
                images.append(convert(path.read_bytes(), str(path)))
                label.append(k)
                group.append(groups.index(g))
        return {"images": np.stack(images), "label": np.array(label, np.int32), "group": np.array(group, np.int32)}

    arrays = cached_arrays(cache, decode)
    return ImageFolder(arrays["images"], arrays["label"], arrays["group"], class_names, groups, str(root_path))


def check_settings(style: str, channels: int, fractions=(1.0, 0.0, 0.0)) -> None:
    """Rejects a style, channel count or split that cannot work (before any image is read)."""
    if style not in STYLES:
        raise ConfigError(f"config.folder.style must be one of {STYLES}, got {style!r}")
    if style == "strokes" and channels != 1:
        raise ConfigError("config.folder.style='strokes' is grayscale: set config.channels=1")
    fractions = np.asarray(fractions, float)
    if fractions.shape != (3,) or (fractions < 0).any() or not np.isclose(fractions.sum(), 1):
        raise ConfigError(f"config.folder.split must be three fractions (train, validation, test) summing to 1, "
                          f"got {tuple(fractions)}")


def split_classes(dataset: ImageFolder, fractions, seed: int) -> dict[str, np.ndarray]:
    """Image ids of the train, validation and test classes: each group's classes divided by `fractions`."""
    check_settings("strokes", 1, fractions)
    fractions = np.asarray(fractions, float)
    rng = np.random.default_rng(seed)
    chosen = {name: [] for name in SPLITS}
    for g in range(len(dataset.group_names)):
        classes = rng.permutation(np.unique(dataset.label[dataset.group == g]))
        n_validation = int(round(fractions[1] * len(classes)))
        n_test = int(round(fractions[2] * len(classes)))
        chosen["validation"] += list(classes[:n_validation])
        chosen["test"] += list(classes[n_validation : n_validation + n_test])
        chosen["train"] += list(classes[n_validation + n_test :])
    for name, classes in chosen.items():
        if fractions[SPLITS.index(name)] > 0 and not classes:
            raise DataError(f"{dataset.root}: the {name} split got no classes: {len(dataset.class_names)} classes "
                            f"are too few for config.folder.split={tuple(fractions)}")
    return {name: np.flatnonzero(np.isin(dataset.label, classes)) for name, classes in chosen.items()}
