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


def write_image_zip(path: Path, root: str, alphabets, first_character: int, seed: int) -> dict:
    """Writes images_<root>.zip; returns {(alphabet, character number): prototype}."""
    rng = np.random.default_rng(seed)
    prototypes = {}
    number = first_character
    with zipfile.ZipFile(path, "w") as archive:
        for alphabet in alphabets:
            for c in range(1, CHARACTERS + 1):
                prototypes[(alphabet, c)] = prototype = glyph(seed * 1000 + number)
                for d in range(1, DRAWERS + 1):
                    name = f"{root}/{alphabet}/character{c:02d}/{number:04d}_{d:02d}.png"
                    archive.writestr(name, png_bytes(drawn(prototype, rng)))
                number += 1
    return prototypes


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


def make_omniglot(data_dir: Path) -> Path:
    """Builds DATA_DIR/omniglot/{images_background,images_evaluation,all_runs}.zip; returns DATA_DIR."""
    folder = data_dir / "omniglot"
    folder.mkdir(parents=True, exist_ok=True)
    write_image_zip(folder / "images_background.zip", "images_background", BACKGROUND, 1, seed=1)
    prototypes = write_image_zip(
        folder / "images_evaluation.zip", "images_evaluation", VALIDATION + TEST, 1 + len(BACKGROUND) * CHARACTERS, seed=2
    )
    write_runs_zip(folder / "all_runs.zip", prototypes, TEST)
    return data_dir
