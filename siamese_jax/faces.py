"""Faces: training splits and the standard LFW protocols (View 1, View 2), plus one-shot identification.

View 1 trains on the peopleDevTrain people, picks the verification threshold on the 2,200
pairsDevTrain pairs and reports accuracy on the 1,000 pairsDevTest pairs. View 2 is 10-fold
cross-validation on pairs.txt: for each fold the threshold is chosen on the other nine folds'
pairs, and in the strict setting the model is also trained on the other nine folds' people
(one training run per fold, --config.lfw.protocol=view2 --config.lfw.fold=K).
"""

from __future__ import annotations

import math

import numpy as np
from jax.sharding import Mesh

from siamese_jax import evaluation
from siamese_jax.data import lfw
from siamese_jax.errors import ConfigError, DataError
from siamese_jax.experiments import Experiment
from siamese_jax.tasks import Pairs, random_trials

PROTOCOLS = ("view1", "view2")
NUM_FOLDS = 10
SETTINGS = {
    "view1": "View 1: trained on the peopleDevTrain people; threshold chosen on the pairsDevTrain pairs",
    "strict": "View 2, strict: per fold, a model trained on the people of the other nine folds (LFW's "
              "unrestricted setting, no outside data) with the threshold chosen on those folds' pairs",
    "thresholds_only": "View 2, thresholds only: one model for every fold, the threshold chosen on the other "
                       "nine folds' pairs; the model was not retrained per fold, so its training people may "
                       "appear in the test folds (not the standard protocol: use the strict setting to report)",
}


def check_lfw_config(config) -> None:
    """Rejects an unknown protocol or fold."""
    if config.lfw.protocol not in PROTOCOLS:
        raise ConfigError(f"config.lfw.protocol must be one of {PROTOCOLS}, got {config.lfw.protocol!r}")
    if config.lfw.protocol == "view2" and not 0 <= config.lfw.fold < NUM_FOLDS:
        raise ConfigError(f"config.lfw.fold must be in 0..{NUM_FOLDS - 1} for view2, got {config.lfw.fold}")


def load_dataset(config) -> lfw.LFW:
    """The LFW images preprocessed as the config says."""
    return lfw.load_lfw(config.data_dir or None, config.cache_dir or None, lfw.preprocessing(config))


def training_people_ids(config, dataset: lfw.LFW) -> np.ndarray:
    """Image ids of the people a run may train on: peopleDevTrain (view1) or the other nine folds (view2)."""
    check_lfw_config(config)
    if config.lfw.protocol == "view1":
        return lfw.people_ids(dataset, lfw.read_people(config.data_dir or None, "peopleDevTrain.txt"))
    folds = set(range(NUM_FOLDS)) - {config.lfw.fold}
    return lfw.people_ids(dataset, lfw.read_people(config.data_dir or None, "people.txt"), folds)


def unseen_people_ids(config, dataset: lfw.LFW) -> np.ndarray:
    """Image ids of the people a run never trains on: peopleDevTest (view1) or the held-out fold (view2)."""
    check_lfw_config(config)
    if config.lfw.protocol == "view1":
        return lfw.people_ids(dataset, lfw.read_people(config.data_dir or None, "peopleDevTest.txt"))
    return lfw.people_ids(dataset, lfw.read_people(config.data_dir or None, "people.txt"), {config.lfw.fold})


def with_min_images(dataset: lfw.LFW, ids: np.ndarray, minimum: int) -> np.ndarray:
    """The ids whose person has at least `minimum` images among `ids`."""
    counts = np.bincount(dataset.person[ids], minlength=len(dataset.names))
    return ids[counts[dataset.person[ids]] >= minimum]


def split_training(config, dataset: lfw.LFW) -> tuple[np.ndarray, np.ndarray]:
    """(training ids, validation ids): training people with two or more images, a fraction held out for validation.

    Only people with two or more images can form same pairs; people with one are left out of
    training. The validation people, drawn with config.lfw.split_seed, are never trained on.
    """
    eligible = with_min_images(dataset, training_people_ids(config, dataset), 2)
    people = np.unique(dataset.person[eligible])
    count = int(round(config.lfw.validation_fraction * len(people)))
    if not 0 < count < len(people) - 1:
        raise ConfigError(
            f"config.lfw.validation_fraction={config.lfw.validation_fraction} leaves {count} of {len(people)} "
            "people with two or more images for validation: it must leave some for both"
        )
    held_out = np.random.default_rng(config.lfw.split_seed).choice(people, count, replace=False)
    in_validation = np.isin(dataset.person[eligible], held_out)
    return eligible[~in_validation], eligible[in_validation]


def lfw_experiment(config, mesh: Mesh | None) -> Experiment:
    """Training on LFW identities: same pairs within a person, different pairs across people."""
    dataset = load_dataset(config)
    train_ids, validation_ids = split_training(config, dataset)
    return Experiment(
        train_images=dataset.images[train_ids],
        train_groups=np.zeros(len(train_ids), np.int32),  # No alphabets: any two people form a different pair.
        train_labels=dataset.person[train_ids],
        validator=validator(config, dataset, validation_ids, mesh),
        evaluate=lambda model, variables, mesh: evaluate_lfw(model, variables, config, dataset, mesh),
        summarize=format_lfw,
    )


def validator(config, dataset: lfw.LFW, validation_ids: np.ndarray, mesh: Mesh | None) -> evaluation.Validator:
    """Identification trials and verification pairs among the held-out validation people."""
    one_group = np.zeros(len(dataset.person), np.int32)
    eval_set = evaluation.validation_set(dataset.images, one_group, dataset.person, validation_ids, config.validation)
    return evaluation.Validator(eval_set, config.eval_batch_size, mesh)


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The threshold t maximising the accuracy of 'same when score > t' on these pairs (a midpoint between scores)."""
    order = np.argsort(scores, kind="stable")
    s, y = np.asarray(scores, np.float64)[order], np.asarray(same, bool)[order]
    # Cutting before sorted position k calls positions >= k 'same': correct = negatives below + positives above.
    correct = np.concatenate([[0], np.cumsum(~y)]) + (y.sum() - np.concatenate([[0], np.cumsum(y)]))
    cut_allowed = np.concatenate([[True], s[1:] > s[:-1], [True]])  # Never split tied scores.
    k = int(np.argmax(np.where(cut_allowed, correct, -1)))
    if k == 0:
        return float(s[0] - 1.0)
    if k == len(s):
        return float(s[-1] + 1.0)
    return float((s[k - 1] + s[k]) / 2)


def accuracy_at(scores: np.ndarray, same: np.ndarray, threshold: float) -> float:
    """Accuracy of 'same when score > threshold'."""
    return float(np.mean((np.asarray(scores) > threshold) == np.asarray(same, bool)))


def cross_validate(scores: np.ndarray, same: np.ndarray, fold: np.ndarray) -> dict:
    """View 2 from pair scores [M, P]: M = 1 model for every fold, or M = 10 with row k trained without fold k.

    For each fold the threshold is chosen on the other folds' pairs only, with that fold's model.
    Reports the mean accuracy with its standard error (sample standard deviation / sqrt(folds)),
    and the mean of the per-fold ROC AUCs.
    """
    scores = np.atleast_2d(scores)
    folds = np.unique(fold)
    if scores.shape[0] not in (1, len(folds)):
        raise ValueError(f"scores has {scores.shape[0]} rows; expected 1 or one per fold ({len(folds)})")
    per_fold = []
    for k in folds:
        row = scores[k if scores.shape[0] > 1 else 0]
        test, train = fold == k, fold != k
        threshold = best_threshold(row[train], same[train])
        per_fold.append({
            "fold": int(k),
            "pairs": int(test.sum()),
            "threshold": threshold,
            "accuracy": accuracy_at(row[test], same[test], threshold),
            "auc": evaluation.roc_auc(row[test], same[test]),
        })
    accuracies = np.array([f["accuracy"] for f in per_fold])
    return {
        "pairs": int(len(same)),
        "accuracy": float(accuracies.mean()),
        "std_error": float(accuracies.std(ddof=1) / math.sqrt(len(folds))) if len(folds) > 1 else None,
        "auc": float(np.mean([f["auc"] for f in per_fold])),
        "per_fold": per_fold,
    }


def pair_scores(model, variables: dict, config, dataset: lfw.LFW, pairs: lfw.PairList, mesh: Mesh | None) -> np.ndarray:
    """The model's same-person probability for every pair of a protocol file."""
    left, right = lfw.pair_ids(dataset, pairs)
    eval_set = evaluation.make_eval_set(dataset.images, pairs=Pairs(left, right, pairs.same))
    embeddings = evaluation.encode(model, variables, eval_set.images, config.eval_batch_size, mesh)
    return evaluation.pair_probabilities(model, variables, embeddings, eval_set.pairs, mesh)


def view1(model, variables: dict, config, dataset: lfw.LFW, mesh: Mesh | None) -> dict:
    """View 1: threshold from the pairsDevTrain pairs, accuracy and AUC on the pairsDevTest pairs."""
    train_pairs = lfw.read_pairs(config.data_dir or None, "pairsDevTrain.txt")
    test_pairs = lfw.read_pairs(config.data_dir or None, "pairsDevTest.txt")
    threshold = best_threshold(pair_scores(model, variables, config, dataset, train_pairs, mesh), train_pairs.same)
    scores = pair_scores(model, variables, config, dataset, test_pairs, mesh)
    return {
        "protocol": "view1",
        "setting": "view1",
        "description": SETTINGS["view1"],
        "pairs": int(len(scores)),
        "accuracy": accuracy_at(scores, test_pairs.same, threshold),
        "std_error": None,
        "auc": evaluation.roc_auc(scores, test_pairs.same),
        "threshold": threshold,
    }


def view2(models_and_variables: list, config, dataset: lfw.LFW, mesh: Mesh | None) -> dict:
    """View 2 over pairs.txt: one (model, variables) for every fold (thresholds only), or ten, fold k's first-k-th."""
    pairs = lfw.read_pairs(config.data_dir or None, "pairs.txt")
    if pairs.num_folds != NUM_FOLDS:
        raise DataError(f"{pairs.source} holds {pairs.num_folds} folds; View 2 has {NUM_FOLDS}")
    scores = np.stack([pair_scores(m, v, config, dataset, pairs, mesh) for m, v in models_and_variables])
    setting = "strict" if len(scores) == NUM_FOLDS else "thresholds_only"
    return {"protocol": "view2", "setting": setting, "description": SETTINGS[setting],
            **cross_validate(scores, pairs.same, pairs.fold)}


def view2_fold(model, variables: dict, config, dataset: lfw.LFW, mesh: Mesh | None) -> dict:
    """The result on its own test fold of a model trained for View 2 fold config.lfw.fold."""
    pairs = lfw.read_pairs(config.data_dir or None, "pairs.txt")
    scores = pair_scores(model, variables, config, dataset, pairs, mesh)
    everything = cross_validate(scores, pairs.same, pairs.fold)
    return {"protocol": "view2", "setting": "strict, one fold",
            "description": f"fold {config.lfw.fold} of the strict View 2 setting; the 10 fold runs together "
                           "give the View 2 result (python -m siamese_jax.evaluate --fold_workdirs=...)",
            **everything["per_fold"][config.lfw.fold]}


def identification(model, variables: dict, config, dataset: lfw.LFW, mesh: Mesh | None) -> dict:
    """N-way one-shot identification among people the run never trained on, with a 95% interval.

    Each task shows one gallery image of each of N people with two or more images and a
    different image of one of them as the query.
    """
    ident = config.lfw.identification
    ids = with_min_images(dataset, unseen_people_ids(config, dataset), 2)
    people = len(np.unique(dataset.person[ids]))
    if people < ident.way:
        raise ConfigError(f"{ident.way}-way identification needs {ident.way} unseen people with two or more "
                          f"images; this split has {people}")
    one_group = np.zeros(len(dataset.person), np.int32)
    trials = random_trials(ids, one_group, dataset.person, ident.way, 1, ident.tasks, ident.seed)
    eval_set = evaluation.make_eval_set(dataset.images, trials)
    return {"way": ident.way, "people": people,
            **evaluation.evaluate_one_shot(model, variables, eval_set, config.eval_batch_size, mesh=mesh)}


def evaluate_lfw(model, variables: dict, config, dataset: lfw.LFW, mesh: Mesh | None = None) -> dict:
    """The report of a model trained by a config: its protocol's verification result, identification, validation."""
    if config.lfw.protocol == "view1":
        verification = view1(model, variables, config, dataset, mesh)
    else:
        verification = view2_fold(model, variables, config, dataset, mesh)
    _, validation_ids = split_training(config, dataset)
    return {
        "lfw": verification,
        "identification": identification(model, variables, config, dataset, mesh),
        "validation": validator(config, dataset, validation_ids, mesh)(model, variables),
    }


def format_lfw(result: dict) -> str:
    """A human-readable summary of an LFW report."""
    v = result["lfw"]
    error = f" +- {100 * v['std_error']:.2f} (standard error over {len(v['per_fold'])} folds)" if v.get("std_error") else ""
    lines = [
        f"LFW {v['protocol']} ({v['setting']}): accuracy {100 * v['accuracy']:.2f}%{error} on {v['pairs']} pairs, "
        f"ROC AUC {v['auc']:.4f}",
        f"  {v['description']}",
    ]
    if "identification" in result:
        ident = result["identification"]
        lo, hi = ident["ci95"]
        lines.append(
            f"{ident['way']}-way one-shot identification of unseen people: {100 * ident['accuracy']:.2f}% over "
            f"{ident['trials']} tasks (95% CI {100 * lo:.1f}-{100 * hi:.1f}; {ident['people']} people)"
        )
    if "validation" in result:
        val = result["validation"]
        lines.append(
            f"validation (held-out training people): verification AUC {val['verification_auc']:.4f}, "
            f"{100 * val['one_shot_accuracy']:.1f}% one-shot over {val['one_shot_trials']} trials"
        )
    return "\n".join(lines)
