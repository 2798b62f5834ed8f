"""Small synthetic datasets in the official Omniglot layout, learnable by a tiny model."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

BACKGROUND = ("Alpha", "Beta", "Gamma")
VALIDATION = ("Val_A", "Val_B")
TEST = ("Run_A", "Run_B")
CHARACTERS = 5
DRAWERS = 20


def glyph(seed: int) -> np.ndarray:
    """A character's prototype: a few thick random strokes on a 105x105 canvas (True = ink)."""
    rng = np.random.default_rng(seed)
    canvas = np.zeros((105, 105), bool)
    for _ in range(3):
        (r0, c0), (r1, c1) = rng.integers(20, 85, (2, 2))
        for t in np.linspace(0, 1, 60):
            r, c = int(r0 + t * (r1 - r0)), int(c0 + t * (c1 - c0))
            canvas[r - 3 : r + 4, c - 3 : c + 4] = True
    return canvas


def drawn(prototype: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One drawer's version: the prototype shifted by a few pixels."""
    dy, dx = rng.integers(-3, 4, 2)
    return np.roll(prototype, (dy, dx), axis=(0, 1))


def png_bytes(ink: np.ndarray) -> bytes:
    """A 1-bit PNG with white background and black strokes, like Omniglot's."""
    buffer = io.BytesIO()
    Image.fromarray(~ink).convert("1").save(buffer, format="PNG")
    return buffer.getvalue()


def prototypes(alphabets, first_character: int, seed: int) -> dict:
    """{(alphabet, character number): prototype} of alphabets whose characters are numbered from `first_character`."""
    numbers = iter(range(first_character, first_character + len(alphabets) * CHARACTERS))
    return {(alphabet, c): glyph(seed * 1000 + next(numbers)) for alphabet in alphabets
            for c in range(1, CHARACTERS + 1)}


def write_image_zip(path: Path, root: str, alphabets, first_character: int, seed: int) -> dict:
    """Writes images_<root>.zip; returns {(alphabet, character number): prototype}."""
    rng = np.random.default_rng(seed)
    drawn_prototypes = prototypes(alphabets, first_character, seed)
    number = first_character
    with zipfile.ZipFile(path, "w") as archive:
        for alphabet in alphabets:
            for c in range(1, CHARACTERS + 1):
                for d in range(1, DRAWERS + 1):
                    name = f"{root}/{alphabet}/character{c:02d}/{number:04d}_{d:02d}.png"
                    archive.writestr(name, png_bytes(drawn(drawn_prototypes[(alphabet, c)], rng)))
                number += 1
    return drawn_prototypes


def write_runs_zip(path: Path, prototypes: dict, alphabets, way: int = 4, seed: int = 7) -> None:
    """Writes an all_runs-layout archive: one run per alphabet, `way` classes, queries shuffled."""
    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(path, "w") as archive:
        for r, alphabet in enumerate(alphabets, 1):
            run = f"run{r:02d}"
            order = rng.permutation(way)
            lines = []
            for k in range(way):
                archive.writestr(f"{run}/training/class{k + 1:02d}.png", png_bytes(drawn(prototypes[(alphabet, k + 1)], rng)))
                archive.writestr(f"{run}/test/item{k + 1:02d}.png", png_bytes(drawn(prototypes[(alphabet, order[k] + 1)], rng)))
                lines.append(f"{run}/test/item{k + 1:02d}.png {run}/training/class{order[k] + 1:02d}.png")
            archive.writestr(f"{run}/class_labels.txt", "\n".join(lines) + "\n")


EVALUATION_SEED = 2  # images_evaluation.zip's, whose characters are numbered after the background's.


def make_omniglot(data_dir: Path) -> Path:
    """Builds DATA_DIR/omniglot/{images_background,images_evaluation,all_runs}.zip; returns DATA_DIR."""
    folder = data_dir / "omniglot"
    folder.mkdir(parents=True, exist_ok=True)
    write_image_zip(folder / "images_background.zip", "images_background", BACKGROUND, 1, seed=1)
    prototypes = write_image_zip(folder / "images_evaluation.zip", "images_evaluation", VALIDATION + TEST,
                                 1 + len(BACKGROUND) * CHARACTERS, seed=EVALUATION_SEED)
    write_runs_zip(folder / "all_runs.zip", prototypes, TEST)
    return data_dir


def write_runs_of_way(path: Path, way: int) -> Path:
    """An all_runs-layout archive of the test alphabets' characters with `way` (at most CHARACTERS) classes a run."""
    write_runs_zip(path, prototypes(VALIDATION + TEST, 1 + len(BACKGROUND) * CHARACTERS, EVALUATION_SEED), TEST, way)
    return path


# A synthetic LFW: 40 people in 10 View 2 folds of 4; the first 24 are View 1's training people.
LFW_PEOPLE = tuple(f"Person_{i:02d}" for i in range(40))
LFW_DEV_TRAIN = LFW_PEOPLE[:24]
LFW_FOLDS = 10


def lfw_image_count(person: int) -> int:
    """Images of person i: one for every seventh person (they cannot form same pairs), else 2-4."""
    return 1 if person % 7 == 3 else 2 + person % 3


def face(seed: int) -> np.ndarray:
    """A person's prototype: coloured rectangles on grey, 250x250 RGB, mostly inside the central crop."""
    rng = np.random.default_rng(seed)
    canvas = np.full((250, 250, 3), 128, np.uint8)
    for _ in range(4):
        (r0, c0), size = rng.integers(60, 150, 2), rng.integers(20, 50, 2)
        canvas[r0 : r0 + size[0], c0 : c0 + size[1]] = rng.integers(0, 256, 3)
    return canvas


def jpeg_bytes(pixels: np.ndarray, mode: str = "RGB") -> bytes:
    """A JPEG of an RGB array, converted to `mode` ('RGB', 'L' or 'CMYK')."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _pair_lines(people, rng, matched: int) -> list[str]:
    """`matched` matched then as many mismatched pair lines among `people` (indices)."""
    repeat = [p for p in people if lfw_image_count(p) >= 2]
    lines = []
    for _ in range(matched):
        p = repeat[rng.integers(len(repeat))]
        n1, n2 = sorted(rng.choice(lfw_image_count(p), 2, replace=False) + 1)
        lines.append(f"{LFW_PEOPLE[p]}\t{n1}\t{n2}")
    for _ in range(matched):
        a, b = rng.choice(people, 2, replace=False)
        lines.append(f"{LFW_PEOPLE[a]}\t{rng.integers(lfw_image_count(a)) + 1}\t{LFW_PEOPLE[b]}\t{rng.integers(lfw_image_count(b)) + 1}")
    return lines


def make_lfw(data_dir: Path, archive: str = "lfw-deepfunneled.tgz", bad_image: tuple[str, bytes] | None = None) -> Path:
    """Builds DATA_DIR/lfw/ with an image archive and all six protocol files; returns DATA_DIR.

    `bad_image` replaces one file's bytes (e.g. ('Person_00/Person_00_0001.jpg', b'junk')).
    """
    import tarfile

    folder = data_dir / "lfw"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    root = archive.split(".")[0]
    with tarfile.open(folder / archive, "w:gz") as tar:
        for i, name in enumerate(LFW_PEOPLE):
            prototype = face(100 + i)
            for n in range(1, lfw_image_count(i) + 1):
                path = f"{name}/{name}_{n:04d}.jpg"
                noisy = np.clip(np.roll(prototype, rng.integers(-4, 5, 2), (0, 1)) + rng.normal(0, 8, prototype.shape), 0, 255)
                data = jpeg_bytes(noisy.astype(np.uint8))
                if bad_image is not None and bad_image[0] == path:
                    data = bad_image[1]
                info = tarfile.TarInfo(f"{root}/{path}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    train, test = range(24), range(24, 40)
    (folder / "pairsDevTrain.txt").write_text("\n".join(["6"] + _pair_lines(train, rng, 6)) + "\n")
    (folder / "pairsDevTest.txt").write_text("\n".join(["4"] + _pair_lines(test, rng, 4)) + "\n")
    folds = [range(4 * k, 4 * k + 4) for k in range(LFW_FOLDS)]
    lines = [f"{LFW_FOLDS}\t2"] + [line for fold in folds for line in _pair_lines(fold, rng, 2)]
    (folder / "pairs.txt").write_text("\n".join(lines) + "\n")

    def people_lines(people):
        return [f"{LFW_PEOPLE[p]}\t{lfw_image_count(p)}" for p in people]

    (folder / "peopleDevTrain.txt").write_text("\n".join([str(len(train))] + people_lines(train)) + "\n")
    (folder / "peopleDevTest.txt").write_text("\n".join([str(len(test))] + people_lines(test)) + "\n")
    lines = [str(LFW_FOLDS)] + [line for fold in folds for line in [str(len(fold))] + people_lines(fold)]
    (folder / "people.txt").write_text("\n".join(lines) + "\n")
    return data_dir


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """An array of uint8 in LeCun's idx format (big-endian magic, then one size per dimension)."""
    header = magic.to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + np.ascontiguousarray(array, np.uint8).tobytes()


def make_mnist(data_dir: Path, per_class: int = 12) -> Path:
    """DATA_DIR/mnist/t10k-{images-idx3,labels-idx1}-ubyte.gz: 10 classes of shifted glyphs, white on black."""
    import gzip

    rng = np.random.default_rng(7)
    labels = np.repeat(np.arange(10), per_class)
    images = np.stack([
        np.asarray(Image.fromarray(drawn(glyph(100 + c), rng).astype(np.uint8) * 255).resize((28, 28), Image.BILINEAR))
        for c in labels
    ])
    folder = data_dir / "mnist"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images, 2051)))
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels, 2049)))
    return data_dir


def make_class_folder(root: Path, groups: tuple[str, ...] = (), classes: int = 10, per_class: int = 4) -> Path:
    """ROOT/<class>/<n>.png (no groups) or ROOT/<group>/<class>/<n>.png: shifted glyphs, black on white."""
    rng = np.random.default_rng(11)
    for g, group in enumerate(groups or ("",)):
        for c in range(classes):
            folder = root / group / f"class_{c:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            prototype = glyph(500 + 50 * g + c)
            for n in range(per_class):
                (folder / f"{n}.png").write_bytes(png_bytes(drawn(prototype, rng)))
    return root
