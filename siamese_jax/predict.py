"""Uses a trained workdir on your own images: compare two, or classify one against a support folder.

    python -m siamese_jax.predict compare A.png B.png [--workdir=DIR] [--json]   # + same/different for face runs
    python -m siamese_jax.predict classify QUERY.png --support=FOLDER [--workdir=DIR] [--top_k=5] [--json]

Without --workdir, the model shipped with the package answers (siamese_jax.pretrained: configs/omniglot_cpu.py's
best checkpoint, for drawn symbols); --workdir takes a training run of your own, or a model it packed.

A support folder holds one subfolder of images per class (one or more images each), or one image
per class named after it (`cat.png`, `dog.jpg`). Each class scores the mean same-class probability
of its images, as K-shot tasks do in evaluation. Images of any common format and size are
converted to the model's input as its training data was: Omniglot-style models (and folder
datasets of style 'strokes') take strokes (the lighter polarity is the background, which becomes
black), face models and 'photo' folders a centre crop in grayscale or RGB.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
import jax
import numpy as np
from absl import app, flags, logging

from siamese_jax import experiments, pretrained
from siamese_jax.evaluation import scoring
from siamese_jax import workdir as workdir_files
from siamese_jax.data import images as image_files
from siamese_jax.errors import DataError, UserError
from siamese_jax.tasks import Pairs

FLAGS = flags.FLAGS

USAGE = __doc__.split("\n\n")[1]


def define_flags(values: flags.FlagValues = FLAGS) -> None:
    """The command's flags, in `values`; defined only when run as a command, so the module imports anywhere."""
    flags.DEFINE_string("workdir", None, "Directory of a training run (holds config.json and checkpoints/), or a "
                        f"packed model; default: the shipped model, {pretrained.shipped_description()}.",
                        flag_values=values)
    flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which parameters to use.", flag_values=values)
    flags.DEFINE_string("support", None, "classify: folder of class subfolders, or of one image per class.",
                        flag_values=values)
    flags.DEFINE_integer("top_k", 5, "classify: how many classes to print.", flag_values=values)
    flags.DEFINE_bool("json", False, "Print the result as JSON.", flag_values=values)


def support_classes(folder: Path) -> dict[str, list[Path]]:
    """Class name -> image paths of a support folder (class subfolders, or one image per class)."""
    if not folder.is_dir():
        raise DataError(f"support folder {folder} does not exist or is not a folder")

    def image_paths(where: Path) -> list[Path]:
        return sorted(p for p in where.iterdir() if p.is_file() and p.suffix.lower() in image_files.IMAGE_SUFFIXES)

    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if subfolders:
        classes = {sub.name: image_paths(sub) for sub in subfolders}
        empty = [name for name, paths in classes.items() if not paths]
        if empty:
            raise DataError(f"support class folder(s) {', '.join(empty)} in {folder} hold no images "
                            f"({', '.join(image_files.IMAGE_SUFFIXES)})")
    else:
        classes = {path.stem: [path] for path in image_paths(folder)}
    if not classes:
        raise DataError(f"support folder {folder} holds no images: put one subfolder of images per class in it, "
                        "or one image per class named after the class")
    if len(classes) < 2:
        raise DataError(f"support folder {folder} holds one class ({next(iter(classes))}): classifying needs two or more")
    return classes


class Predictor:
    """A trained model and its input conversion, loaded from a workdir."""

    def __init__(self, workdir: str, checkpoint: str = "best"):
        self.config = workdir_files.load_config(workdir)
        self.model, self.variables = workdir_files.restore_model(workdir, self.config, checkpoint)
        self.experiment = experiment = experiments.build(self.config)
        self.convert = experiment.image_converter()  # Any image file -> model input, as training saw it.
        # A Euclidean head's probability, sigmoid(margin/2 - distance), ranks pairs but is not calibrated:
        # the threshold the run's evaluation chose on pairs for these parameters tells same from different.
        self.threshold = experiment.verification_threshold(workdir_files.evaluation_of(workdir, checkpoint))

    def embed(self, images: np.ndarray) -> jax.Array:
        """Embeddings [M, D] of model-input images [M, S, S(, C)], in batches no larger than needed (one query is
        one image's work)."""
        return scoring.encode(self.model, self.variables, images, min(self.config.eval_batch_size, len(images)))

    def pair_logits(self, images: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """Same-class logit of each (left, right) pair of model-input images."""
        return self.embedded_pair_logits(self.embed(images), left, right)

    def embedded_pair_logits(self, embeddings: jax.Array, left, right) -> np.ndarray:
        """Same-class logit of each (left, right) pair of embeddings."""
        pairs = Pairs(np.asarray(left, np.int32), np.asarray(right, np.int32), np.zeros(len(left), bool))
        return scoring.pair_logits(self.model, self.variables, embeddings, pairs)

    def rank(self, query: jax.Array, support: jax.Array, names: list[str], counts: list[int]) -> list[dict]:
        """Every class with its mean same-class probability against a query, best first: `query` is one embedding
        [D], `support` the embeddings [M, D] of the classes' images ([V, D] and [V, M, D] with V test-time
        turns), `counts[i]` images of class names[i] in order.

        A class scores as the evaluation scores a trial's candidate (scoring.combined_log_probability over its
        images and the turns), ranked by the log of that mean, so that probabilities that round to 1.0 still
        rank as the evaluation ranks them.
        """
        images = support.shape[-2]
        if sum(counts) != images:
            raise ValueError(f"counts add up to {sum(counts)} images, but the support holds {images}")
        embeddings = jax.numpy.concatenate([query[..., None, :], support], axis=-2)
        pairs = Pairs(np.zeros(images, np.int32), np.arange(1, images + 1, dtype=np.int32), np.zeros(images, bool))
        logits = scoring.view_pair_logits(self.model, self.variables, embeddings, pairs)  # [V, M]
        ranking, start = [], 0
        for name, count in zip(names, counts):
            log_score = float(scoring.combined_log_probability(logits[:, start : start + count]))
            ranking.append({"class": name, "score": float(np.exp(log_score)), "log_score": log_score,
                            "images": count})
            start += count
        return sorted(ranking, key=lambda r: -r["log_score"])

    def compare(self, a: Path, b: Path) -> dict:
        """Probability that images a and b show the same class, their logit, and, for runs whose evaluation
        chose a verification threshold (faces), that threshold and whether the logit is above it."""
        images = np.stack([self.convert(a), self.convert(b)])
        logit = float(self.pair_logits(images, [0], [1])[0])
        result = {"probability": float(jax.nn.sigmoid(logit)), "logit": logit}
        if self.threshold is not None:
            result.update(threshold=self.threshold, same=logit > self.threshold)
        return result

    def classify(self, query: Path, support: Path) -> list[dict]:
        """Every class of a support folder with its mean same-class probability against the query, best first."""
        return self.classify_input(self.convert(query), support)

    def classify_input(self, query: np.ndarray, support: Path) -> list[dict]:
        """classify for a query already converted to model input."""
        classes = support_classes(support)
        images = [query] + [self.convert(p) for paths in classes.values() for p in paths]
        embeddings = self.embed(np.stack(images))
        return self.rank(embeddings[..., 0, :], embeddings[..., 1:, :], list(classes), [len(ps) for ps in classes.values()])


def main(argv, values: flags.FlagValues = FLAGS):
    """Runs `compare` or `classify` with the flags parsed into `values`."""
    logging.set_verbosity(logging.WARNING)  # orbax logs every restore at INFO.
    command, args = (argv[1], argv[2:]) if len(argv) > 1 else (None, [])
    expected = {"compare": 2, "classify": 1}
    if command not in expected or len(args) != expected[command]:
        sys.exit(f"usage:\n{USAGE}")
    if command == "classify" and not values.support:
        sys.exit("error: classify needs --support=FOLDER")
    try:
        for path in args:
            if not Path(path).is_file():
                raise DataError(f"image {path} not found")
        predictor = Predictor(pretrained.default_workdir(values.workdir), values.checkpoint)
        if command == "compare":
            compared = predictor.compare(Path(args[0]), Path(args[1]))
            result = {"a": args[0], "b": args[1], **compared}
            text = f"same-class probability {compared['probability']:.4f} (logit {compared['logit']:.4f})"
            if "same" in compared:
                text += (f"\n{'same' if compared['same'] else 'different'}: the logit is "
                         f"{'above' if compared['same'] else 'at or below'} the threshold {compared['threshold']:.4f} "
                         f"that the run's evaluation chose")
        else:
            ranking = predictor.classify(Path(args[0]), Path(values.support))
            result = {"query": args[0], "support": values.support, "ranking": ranking}
            shown = ranking[: values.top_k]
            text = "\n".join(f"{i + 1:>3}. {r['class']:<24} {r['score']:.4f}  ({r['images']} image{'s' * (r['images'] > 1)})"
                             for i, r in enumerate(shown))
    except UserError as error:
        sys.exit(f"error: {error}")
    print(json.dumps(result, indent=2) if values.json else text)


if __name__ == "__main__":
    define_flags()
    app.run(main)
