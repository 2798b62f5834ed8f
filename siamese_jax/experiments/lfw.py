"""Faces: training splits and the standard LFW protocols (View 1, View 2), plus one-shot identification.

View 1 trains on the peopleDevTrain people, picks the verification threshold on the 2,200
pairsDevTrain pairs and reports accuracy on the 1,000 pairsDevTest pairs. View 2 is 10-fold
cross-validation on pairs.txt: for each fold the threshold is chosen on the other nine folds'
pairs, and in the strict setting the model is also trained on the other nine folds' people
(one training run per fold, --config.lfw.protocol=view2 --config.lfw.fold=K).
"""

from __future__ import annotations

import dataclasses
import functools

import ml_collections
import numpy as np
from jax.sharding import Mesh

from siamese_jax import workdir
from siamese_jax.evaluation import evaluators, metrics, score_norm, scoring
from siamese_jax.data import images as image_files
from siamese_jax.data import lfw
from siamese_jax.errors import ConfigError, DataError, UserError
from siamese_jax.experiments import base
from siamese_jax.tasks import Pairs, random_pairs, random_trials

PROTOCOLS = ("view1", "view2")
NUM_FOLDS = 10
SETTINGS = {
    "view1": "View 1: trained on the peopleDevTrain people",
    "strict": "View 2, strict: per fold, a model trained on the people of the other nine folds (LFW's "
              "unrestricted setting, no outside data)",
    "thresholds_only": "View 2, thresholds only: one model for every fold; the model was not retrained per fold, so "
                       "its training people may appear in the test folds (not the standard protocol: use the strict "
                       "setting to report)",
}
# Where the same/different threshold comes from (config.lfw.threshold). Both use training-side data only.
THRESHOLD_SOURCES = {
    "validation": "threshold chosen on pairs of the training people held out from training (the validation pairs)",
    "protocol": "threshold chosen on the protocol's training pairs (pairsDevTrain; the other nine folds' pairs)",
}


def cohort_norm(section) -> ml_collections.ConfigDict | None:
    """config.lfw.cohort_norm when AS-norm is on (images > 0), else None."""
    return section.cohort_norm if section.cohort_norm.images else None


def test_crops(section) -> tuple[int, ...]:
    """config.lfw.test_crops: the other centred crops that verification averages each photo's embedding over."""
    return tuple(section.test_crops)


def fold_workdirs(workdirs: list[str]) -> list[str]:
    """The workdirs of View 2's ten fold runs, ordered by fold; a clear error for a missing or repeated fold,
    a workdir that is not a View 2 fold run, or runs that preprocess images differently."""
    folds: dict[int, list[str]] = {}
    first = None
    for path in workdirs:
        config = workdir.load_config(path)
        if base.dataset_name(config) != "lfw" or config.lfw.protocol != "view2":
            raise UserError(f"{path} is not a View 2 fold run (train one with --config.lfw.protocol=view2 "
                            "--config.lfw.fold=K)")
        if first is not None and lfw.preprocessing(config) != lfw.preprocessing(first[1]):
            raise UserError(f"{path} preprocesses images differently from {first[0]}")
        first = first or (path, config)
        folds.setdefault(int(config.lfw.fold), []).append(path)
    repeated = {k: paths for k, paths in folds.items() if len(paths) > 1}
    if repeated:
        k, paths = min(repeated.items())
        raise UserError(f"fold {k} is given twice: {' and '.join(paths)}")
    missing = sorted(set(range(NUM_FOLDS)) - set(folds))
    if missing:
        raise UserError(f"View 2 needs all {NUM_FOLDS} folds; missing fold(s) {', '.join(map(str, missing))}")
    return [folds[k][0] for k in range(NUM_FOLDS)]


def with_min_images(dataset: lfw.LFW, ids: np.ndarray, minimum: int) -> np.ndarray:
    """The ids whose person has at least `minimum` images among `ids`."""
    counts = np.bincount(dataset.person[ids], minlength=len(dataset.names))
    return ids[counts[dataset.person[ids]] >= minimum]


def protocol_line(result: dict) -> str:
    """The verification result of an LFW report in one line: protocol, accuracy and ROC AUC."""
    v = result["lfw"]
    error = f" +- {100 * v['std_error']:.2f} (standard error over {len(v['per_fold'])} folds)" if v.get("std_error") else ""
    return (f"LFW {v['protocol']} ({v['setting']}): accuracy {100 * v['accuracy']:.2f}%{error} on {v['pairs']} pairs, "
            f"ROC AUC {v['auc']:.4f}")


def format_lfw(result: dict) -> str:
    """A human-readable summary of an LFW report."""
    v = result["lfw"]
    lines = [protocol_line(result), f"  {v['description']}"]
    for source, other in v.get("accuracy_by_threshold_source", {}).items():
        if source != v.get("threshold_source"):
            lines.append(f"  with the {source} threshold instead: {100 * other['accuracy']:.2f}%")
    for ident in result.get("identification", []):
        if "skipped" in ident:
            lines.append(f"{ident['way']}-way one-shot identification: skipped ({ident['skipped']})")
            continue
        lo, hi = ident["ci95"]
        lines.append(
            f"{ident['way']}-way one-shot identification of unseen people: {100 * ident['accuracy']:.2f}% over "
            f"{ident['trials']} tasks (95% CI {100 * lo:.1f}-{100 * hi:.1f}; {ident['people']} people)"
        )
    if "validation" in result:
        lines.append(evaluators.validation_line(result["validation"], "validation (held-out training people)"))
    return "\n".join(lines)


class Experiment(base.Experiment):
    """LFW: View 1 or one fold of View 2 (config.lfw), identification of unseen people."""

    options = ("protocol",)

    def check_config(self) -> None:
        """The protocol, fold and split fractions."""
        f = self.config.lfw
        if f.protocol not in PROTOCOLS:
            raise ConfigError(f"config.lfw.protocol must be one of {PROTOCOLS}, got {f.protocol!r}")
        if f.threshold not in THRESHOLD_SOURCES:
            raise ConfigError(f"config.lfw.threshold must be one of {tuple(THRESHOLD_SOURCES)}, got {f.threshold!r}")
        if f.protocol == "view2" and not 0 <= f.fold < NUM_FOLDS:
            raise ConfigError(f"config.lfw.fold must be in 0..{NUM_FOLDS - 1} for view2, got {f.fold}")
        norm = f.cohort_norm
        if not (norm.images >= 0 and norm.top >= 1):
            raise ConfigError(f"config.lfw.cohort_norm needs images >= 0 (0: off) and top >= 1, got "
                              f"images={norm.images}, top={norm.top}")
        crops = test_crops(f)
        valid = all(isinstance(c, int) and 1 <= c <= 250 for c in crops)
        if not valid or len(set(crops)) < len(crops) or f.crop in crops:
            raise ConfigError(f"config.lfw.test_crops must be distinct sides in 1..250 pixels other than config.lfw.crop "
                              f"({f.crop}), got {crops}")
        if self.config.model.test_time_turns != 1:
            # Verification's AS-norm and test crops work on one embedding per photo, and a face is upright.
            raise ConfigError(f"config.model.test_time_turns={self.config.model.test_time_turns} does not apply to "
                              "faces: use 1 (or --config.model.test_time_flip for the mirror image)")
        if not 0 < f.validation_fraction < 1:
            raise ConfigError(f"config.lfw.validation_fraction must lie in (0, 1), got {f.validation_fraction}")
        if not tuple(f.identification.ways) or min(tuple(f.identification.ways)) < 2:
            raise ConfigError(f"config.lfw.identification.ways must be numbers of people, each at least 2, got "
                              f"{tuple(f.identification.ways)}")

    @property
    def data_dir(self) -> str | None:
        """Where the archive and protocol files are (None: $SIAMESE_JAX_DATA_DIR)."""
        return self.config.data_dir or None

    @functools.cached_property
    def dataset(self) -> lfw.LFW:
        """The LFW images preprocessed as the config says."""
        dataset = lfw.load_lfw(self.data_dir, self.config.cache_dir or None, lfw.preprocessing(self.config))
        crops = test_crops(self.config.lfw)
        if crops and dataset.source.endswith(lfw.PACKED_ARCHIVE):  # Known before training, not after.
            raise DataError(f"{dataset.source} holds the photos at one crop only; config.lfw.test_crops={crops} needs "
                            "an LFW archive of whole photos (or --config.lfw.test_crops='()')")
        return dataset

    def people_ids(self, trained: bool) -> np.ndarray:
        """Image ids of the people a run trains on (`trained`) or never sees: peopleDevTrain/peopleDevTest
        (view1), or the other nine folds / the held-out fold (view2)."""
        f = self.config.lfw
        if f.protocol == "view1":
            name = "peopleDevTrain.txt" if trained else "peopleDevTest.txt"
            return lfw.people_ids(self.dataset, lfw.read_people(self.data_dir, name))
        folds = set(range(NUM_FOLDS)) - {f.fold} if trained else {f.fold}
        return lfw.people_ids(self.dataset, lfw.read_people(self.data_dir, "people.txt"), folds)

    @functools.cached_property
    def split_ids(self) -> tuple[np.ndarray, np.ndarray]:
        """(training ids, validation ids): training people with two or more images, a fraction held out.

        Only people with two or more images can form same pairs; people with one are left out of
        training. The validation people, drawn with config.lfw.split_seed, are never trained on.
        """
        f = self.config.lfw
        eligible = with_min_images(self.dataset, self.people_ids(trained=True), 2)
        people = np.unique(self.dataset.person[eligible])
        count = int(round(f.validation_fraction * len(people)))
        if not 0 < count < len(people) - 1:
            raise ConfigError(
                f"config.lfw.validation_fraction={f.validation_fraction} leaves {count} of {len(people)} "
                "people with two or more images for validation: it must leave some for both"
            )
        held_out = np.random.default_rng(f.split_seed).choice(people, count, replace=False)
        in_validation = np.isin(self.dataset.person[eligible], held_out)
        return eligible[~in_validation], eligible[in_validation]

    def training_set(self) -> base.TrainingSet:
        """The training people's images; no alphabets, so any two people form a different pair."""
        ids = self.split_ids[0]
        return base.TrainingSet(self.dataset.images[ids], np.zeros(len(ids), np.int32), self.dataset.person[ids])

    def validation_split(self) -> evaluators.Split:
        """The held-out training people: identification trials and verification pairs among them."""
        one_group = np.zeros(len(self.dataset.person), np.int32)
        return evaluators.Split(self.dataset.images, one_group, self.dataset.person, self.split_ids[1])

    @functools.cached_property
    def cohort_ids(self) -> np.ndarray | None:
        """The images of training people that AS-norm scores every photo against (config.lfw.cohort_norm), drawn
        with its seed; None when it is off."""
        section = cohort_norm(self.config.lfw)
        if section is None:
            return None
        train_ids = self.split_ids[0]
        count = min(int(section.images), len(train_ids))
        return np.sort(np.random.default_rng(section.seed).choice(train_ids, count, replace=False))

    @functools.cached_property
    def score_normalizer(self) -> score_norm.CohortNorm | None:
        """AS-norm against the cohort_ids photos, as verification encodes them; None when it is off."""
        if self.cohort_ids is None:
            return None
        return score_norm.CohortNorm(self.verification_images[self.cohort_ids], int(self.config.lfw.cohort_norm.top),
                                     self.encode_for_verification)

    @functools.cached_property
    def verification_images(self) -> np.ndarray:
        """Every photo as verification encodes it: the dataset's images, or with config.lfw.test_crops its views
        [N, V, S, S(, C)], the crop of config.lfw.crop first, then each test crop."""
        crops = test_crops(self.config.lfw)
        if not crops:
            return self.dataset.images
        prep = lfw.preprocessing(self.config)
        others = [lfw.load_lfw(self.data_dir, self.config.cache_dir or None, dataclasses.replace(prep, crop=crop)).images
                  for crop in crops]
        return np.stack([self.dataset.images, *others], axis=1)

    def encode_for_verification(self, model, variables: dict, images: np.ndarray, mesh: Mesh | None):
        """Embeddings of images taken from verification_images (each photo's views averaged when it has several)."""
        encode = scoring.encode_views if test_crops(self.config.lfw) else scoring.encode
        return encode(model, variables, images, self.config.eval_batch_size, mesh)

    def verification_logits(self, model, variables: dict, eval_set: scoring.EvalSet, mesh: Mesh | None) -> np.ndarray:
        """The logits of an EvalSet's pairs (drawn on verification_images), AS-normalised against the cohort when
        config.lfw.cohort_norm is on."""
        embeddings = self.encode_for_verification(model, variables, eval_set.images, mesh)
        if self.score_normalizer is None:
            return scoring.pair_logits(model, variables, embeddings, eval_set.pairs, mesh)
        return self.score_normalizer(model, variables, embeddings, eval_set.pairs, mesh)

    def pair_scores(self, model, variables: dict, pairs: lfw.PairList, mesh: Mesh | None) -> np.ndarray:
        """The model's same-person score for every pair of a protocol file (thresholds are chosen on these)."""
        left, right = lfw.pair_ids(self.dataset, pairs)
        eval_set = scoring.make_eval_set(self.verification_images, pairs=Pairs(left, right, pairs.same))
        return self.verification_logits(model, variables, eval_set, mesh)

    def validation_threshold(self, model, variables: dict, mesh: Mesh | None, raw: bool = False) -> float:
        """The threshold that best separates the validation pairs: pairs of training-side people held out from
        training, so that their distances are those of unseen people (config.validation's pairs). On their
        verification scores (test crops, AS-norm), or with `raw` on the plain logits of one crop, as the predict
        command scores a pair."""
        batch = self.config.eval_batch_size
        split = dataclasses.replace(self.validation_split(),
                                    images=self.dataset.images if raw else self.verification_images)
        v = self.config.validation
        pairs = random_pairs(split.indices, split.groups, split.labels, v.verification_pairs,
                             evaluators.verification_seed(v))
        eval_set = scoring.make_eval_set(split.images, pairs=pairs)
        scores = (scoring.eval_set_pair_logits(model, variables, eval_set, batch, mesh) if raw
                  else self.verification_logits(model, variables, eval_set, mesh))
        return metrics.best_threshold(scores, eval_set.pairs.same)

    def cross_validate_by_source(self, scores: np.ndarray, pairs: lfw.PairList,
                                 validation_thresholds: list[float]) -> tuple[str, dict]:
        """config.lfw.threshold, and cross_validate's result for each threshold source."""
        by_source = {"validation": metrics.cross_validate(scores, pairs.same, pairs.fold, validation_thresholds),
                     "protocol": metrics.cross_validate(scores, pairs.same, pairs.fold)}
        return self.config.lfw.threshold, by_source

    def description(self, setting: str) -> str:
        """The setting's description with the config's threshold source, test crops and score normalisation."""
        f = self.config.lfw
        norm, crops = cohort_norm(f), test_crops(f)
        cropped = "" if not crops else (
            f"; each photo's embedding averaged over centred crops of {', '.join(map(str, (f.crop, *crops)))} pixels")
        normalised = "" if norm is None else (
            f"; scores AS-normalised against {len(self.cohort_ids)} photos of training people (top {norm.top})")
        return f"{SETTINGS[setting]}; {THRESHOLD_SOURCES[f.threshold]}{cropped}{normalised}"

    def view1(self, model, variables: dict, mesh: Mesh | None) -> dict:
        """View 1: accuracy and AUC on the pairsDevTest pairs, at the threshold of config.lfw.threshold (and at
        the other source's, reported alongside)."""
        train_pairs = lfw.read_pairs(self.data_dir, "pairsDevTrain.txt")
        test_pairs = lfw.read_pairs(self.data_dir, "pairsDevTest.txt")
        thresholds = {
            "validation": self.validation_threshold(model, variables, mesh),
            "protocol": metrics.best_threshold(self.pair_scores(model, variables, train_pairs, mesh), train_pairs.same),
        }
        source = self.config.lfw.threshold
        scores = self.pair_scores(model, variables, test_pairs, mesh)
        return {
            "protocol": "view1",
            "setting": "view1",
            "description": self.description("view1"),
            "pairs": int(len(scores)),
            "accuracy": metrics.accuracy_at(scores, test_pairs.same, thresholds[source]),
            "std_error": None,
            "auc": metrics.roc_auc(scores, test_pairs.same),
            "threshold": thresholds[source],
            "threshold_source": source,
            "logit_threshold": self.validation_threshold(model, variables, mesh, raw=True),
            "accuracy_by_threshold_source": {
                name: {"accuracy": metrics.accuracy_at(scores, test_pairs.same, t), "threshold": t}
                for name, t in thresholds.items()
            },
        }

    def view2_pairs(self) -> lfw.PairList:
        """pairs.txt, checked to hold View 2's ten folds."""
        pairs = lfw.read_pairs(self.data_dir, "pairs.txt")
        if pairs.num_folds != NUM_FOLDS:
            raise DataError(f"{pairs.source} holds {pairs.num_folds} folds; View 2 has {NUM_FOLDS}")
        return pairs

    def view2(self, scores: np.ndarray, pairs: lfw.PairList, validation_thresholds: list[float]) -> dict:
        """View 2 from pair_scores rows [M, P] of pairs.txt: one model for every fold (thresholds only), or ten,
        the k-th fold k's, each with its validation threshold; config.lfw.threshold says which threshold gives
        the result, and the other's result is reported alongside."""
        setting = "strict" if len(scores) == NUM_FOLDS else "thresholds_only"
        source, by_source = self.cross_validate_by_source(scores, pairs, validation_thresholds)
        return {"protocol": "view2", "setting": setting, "description": self.description(setting),
                **by_source[source], "threshold_source": source,
                "accuracy_by_threshold_source": {name: {"accuracy": r["accuracy"], "std_error": r["std_error"]}
                                                 for name, r in by_source.items()}}

    def view2_fold(self, model, variables: dict, mesh: Mesh | None) -> dict:
        """The result on its own test fold of a model trained for View 2 fold config.lfw.fold."""
        fold = self.config.lfw.fold
        pairs = self.view2_pairs()
        scores = self.pair_scores(model, variables, pairs, mesh)
        source, by_source = self.cross_validate_by_source(
            scores, pairs, [self.validation_threshold(model, variables, mesh)])
        return {"protocol": "view2", "setting": "strict, one fold",
                "description": f"fold {fold} of the strict View 2 setting; the 10 fold runs together "
                               "give the View 2 result (python -m siamese_jax.evaluate --fold_workdirs=...); "
                               + THRESHOLD_SOURCES[source],
                **by_source[source]["per_fold"][fold], "threshold_source": source,
                "logit_threshold": self.validation_threshold(model, variables, mesh, raw=True),
                "accuracy_by_threshold_source": {name: {"accuracy": r["per_fold"][fold]["accuracy"]}
                                                 for name, r in by_source.items()}}

    def identification(self, model, variables: dict, mesh: Mesh | None) -> list[dict]:
        """N-way one-shot identification among people the run never trained on, for each N of
        config.lfw.identification.ways, with a 95% interval.

        Each task shows one gallery image of each of N people with two or more images and a
        different image of one of them as the query. An N above the number of such people is
        reported as skipped.
        """
        ident = self.config.lfw.identification
        ids = with_min_images(self.dataset, self.people_ids(trained=False), 2)
        people = len(np.unique(self.dataset.person[ids]))
        one_group = np.zeros(len(self.dataset.person), np.int32)
        results = []
        for way in tuple(ident.ways):
            if people < way:
                results.append({"way": way, "people": people, "skipped": f"needs {way} unseen people with two or "
                                                                         f"more images; this split has {people}"})
                continue
            trials = random_trials(ids, one_group, self.dataset.person, way, 1, ident.tasks, ident.seed)
            eval_set = scoring.make_eval_set(self.dataset.images, trials)
            results.append({"way": way, "people": people, **scoring.evaluate_one_shot(
                model, variables, eval_set, self.config.eval_batch_size, mesh=mesh)})
        return results

    def evaluate(self, model, variables: dict, mesh: Mesh | None = None, protocol: str | None = None) -> dict:
        """The run's protocol result, identification and validation; with `protocol`='view2' on a View 1
        model, View 2 with this one model for every fold (thresholds only)."""
        own = self.config.lfw.protocol
        if protocol not in (None, own):
            if protocol == "view1":
                raise UserError(f"this run was trained for View 2 fold {self.config.lfw.fold}, whose training "
                                "people include View 1's test people: evaluate it with --protocol=view2")
            pairs = self.view2_pairs()
            return {"lfw": self.view2(self.pair_scores(model, variables, pairs, mesh)[None], pairs,
                                      [self.validation_threshold(model, variables, mesh)])}
        verification = self.view1(model, variables, mesh) if own == "view1" else self.view2_fold(model, variables, mesh)
        return {
            "lfw": verification,
            "identification": self.identification(model, variables, mesh),
            "validation": self.validation(mesh)(model, variables, with_sizes=True),
        }

    def summarize(self, result: dict) -> str:
        """The protocol line, identification and validation."""
        return format_lfw(result)

    def headline(self, result: dict) -> str:
        """The protocol's verification accuracy."""
        return protocol_line(result)

    def verification_threshold(self, report: dict) -> float | None:
        """The threshold on one pair's plain logit that the View 1 or fold evaluation chose on the validation pairs
        (none in View 2 reports, one per fold there).

        Reports written before they held logit_threshold give their threshold when it was on plain
        logits (no test crops, no AS-norm), else none: a threshold on normalised scores does not apply to a logit.
        """
        section = report.get("lfw", {})
        if "logit_threshold" in section:
            return float(section["logit_threshold"])
        plain = cohort_norm(self.config.lfw) is None and not test_crops(self.config.lfw)
        return float(section["threshold"]) if plain and section.get("threshold") is not None else None

    def image_converter(self):
        """Any photo -> the centre crop, grayscale or RGB, at the model's input size."""
        prep = lfw.preprocessing(self.config)
        return lambda path: lfw.decode_face(image_files.read_image_file(path), str(path), prep)

    @classmethod
    def evaluate_folds(cls, workdirs: list[str], checkpoint: str = "best", mesh: Mesh | None = None,
                       model_overrides: dict | None = None, evaluation_overrides: dict | None = None) -> dict:
        """LFW View 2 in the strict setting from the ten fold workdirs, in any order (fold k's model scores fold k);
        `model_overrides` and `evaluation_overrides` as workdir.load_config takes them."""
        by_fold = fold_workdirs(workdirs)
        configs = [workdir.load_config(w, model_overrides, evaluation_overrides) for w in by_fold]
        models = [workdir.restore_model(w, c, checkpoint, mesh) for w, c in zip(by_fold, configs)]
        folds = [cls(c) for c in configs]
        # Each fold's own training people give its validation threshold and its cohort.
        pairs = folds[0].view2_pairs()
        scores = np.stack([fold.pair_scores(m, v, pairs, mesh) for fold, (m, v) in zip(folds, models)])
        thresholds = [fold.validation_threshold(m, v, mesh) for fold, (m, v) in zip(folds, models)]
        return {"lfw": folds[0].view2(scores, pairs, thresholds), "fold_workdirs": by_fold}
