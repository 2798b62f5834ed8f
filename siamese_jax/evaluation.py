"""One-shot and verification evaluation: encode every distinct image once, score with the head alone."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath
from jax.sharding import Mesh

from siamese_jax import distributed
from siamese_jax.data.images import to_float, to_model_input
from siamese_jax.data.omniglot import Omniglot, OneShotRuns, load_runs
from siamese_jax.errors import DataError
from siamese_jax.files import write_atomically
from siamese_jax.models import SiameseNet, build_model, init_variables, input_shape
from siamese_jax.tasks import Pairs, Trials, random_pairs, random_trials, runs_trials

TRIAL_CHUNK = 128  # Trials scored per call: bounds the [chunk, N, K, D] difference tensor.


@dataclasses.dataclass(frozen=True)
class EvalSet:
    """Model-ready images and the trials and/or pairs that index them."""

    images: np.ndarray  # uint8 [M, S, S]
    trials: Trials | None = None
    pairs: Pairs | None = None


def make_eval_set(images: np.ndarray, trials: Trials | None = None, pairs: Pairs | None = None,
                  prepare=None) -> EvalSet:
    """Keeps only the images the trials and pairs use, renumbers them, and applies `prepare`.

    `prepare` turns the kept images into uint8 model input (e.g. Omniglot's ink masks resized by
    to_model_input); None means they already are.
    """
    used = [a.ravel() for a in (
        *((trials.support, trials.query) if trials else ()),
        *((pairs.left, pairs.right) if pairs else ()),
    )]
    ids = np.unique(np.concatenate(used))

    def local(a):
        return np.searchsorted(ids, a).astype(np.int32)

    kept = images[ids]
    return EvalSet(
        images=prepare(kept) if prepare is not None else kept,
        trials=dataclasses.replace(trials, support=local(trials.support), query=local(trials.query)) if trials else None,
        pairs=dataclasses.replace(pairs, left=local(pairs.left), right=local(pairs.right)) if pairs else None,
    )


def encode(model: SiameseNet, variables: dict, images: np.ndarray, batch_size: int, mesh: Mesh | None = None) -> jax.Array:
    """Embeddings [M, D] of uint8 images [M, S, S(, C)], in fixed-size batches split over the mesh's devices.

    The batch size is rounded up to a multiple of the device count; the embeddings come back
    replicated on every device. `mesh` defaults to every device.
    """
    mesh = mesh or distributed.data_mesh()
    batch_size = -(-batch_size // mesh.size) * mesh.size
    embed = embed_fn(model, mesh)
    variables = distributed.put(variables, distributed.replicated(mesh))
    split = distributed.batch_sharded(mesh)
    count = len(images)
    padded = np.concatenate([images, np.zeros((-count % batch_size, *images.shape[1:]), images.dtype)])
    chunks = distributed.paced(
        embed(variables, distributed.put(padded[i : i + batch_size], split)) for i in range(0, len(padded), batch_size)
    )
    return jnp.concatenate(list(chunks))[:count]


# The jitted functions are built once per model and mesh (linen modules hash by their fields):
# a fresh jax.jit per call would trace and compile again at every epoch's validation.
@functools.lru_cache(maxsize=8)
def embed_fn(model: SiameseNet, mesh: Mesh | None = None):
    """Jitted (variables, uint8 images [B, S, S(, C)]) -> embeddings [B, D], replicated over `mesh` if given."""
    return jax.jit(
        lambda variables, x: model.apply(variables, to_float(x), method=SiameseNet.embed),
        out_shardings=distributed.replicated(mesh) if mesh is not None else None,
    )


def _replicated_inputs(mesh: Mesh | None, *trees):
    """Host or device values as arrays replicated over `mesh` (default: every device)."""
    where = distributed.replicated(mesh or distributed.data_mesh())
    return tuple(distributed.put(tree, where) for tree in trees)


@functools.lru_cache(maxsize=8)
def _trial_score_fn(model: SiameseNet):
    @jax.jit
    def score(variables, embeddings, query, support):
        h_query = embeddings[query][:, None, None, :]  # [T, 1, 1, D]
        logits = model.apply(variables, h_query, embeddings[support], method=SiameseNet.score)
        return jnp.mean(jax.nn.sigmoid(logits), axis=-1)  # Average over the K shots: [T, N].

    return score


def trial_probabilities(model: SiameseNet, variables: dict, embeddings: jax.Array, trials: Trials,
                        mesh: Mesh | None = None) -> np.ndarray:
    """Probability [T, N] that each trial's query matches each support class."""
    score = _trial_score_fn(model)
    count = len(trials.query)
    pad = -count % TRIAL_CHUNK
    query = np.concatenate([trials.query, np.zeros(pad, np.int32)])
    support = np.concatenate([trials.support, np.zeros((pad, *trials.support.shape[1:]), np.int32)])
    variables, embeddings = _replicated_inputs(mesh, variables, embeddings)
    out = list(distributed.paced(
        score(variables, embeddings, *_replicated_inputs(mesh, query[i : i + TRIAL_CHUNK], support[i : i + TRIAL_CHUNK]))
        for i in range(0, len(query), TRIAL_CHUNK)
    ))
    return np.concatenate([np.asarray(chunk) for chunk in out])[:count]


def pair_probabilities(model: SiameseNet, variables: dict, embeddings: jax.Array, pairs: Pairs,
                       mesh: Mesh | None = None) -> np.ndarray:
    """Probability [P] that each pair shows one class."""
    return np.asarray(_pair_score_fn(model)(*_replicated_inputs(mesh, variables, embeddings, pairs.left, pairs.right)))


@functools.lru_cache(maxsize=8)
def _pair_score_fn(model: SiameseNet):
    return jax.jit(
        lambda v, e, a, b: jax.nn.sigmoid(model.apply(v, e[a], e[b], method=SiameseNet.score))
    )


def wilson_interval(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion."""
    if total == 0:
        return (0.0, 1.0)
    p = correct / total
    center = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return (max(0.0, center - half), min(1.0, center + half))


def one_shot_summary(probabilities: np.ndarray, trials: Trials, group_names=None) -> dict:
    """Accuracy of picking the most probable class, overall and per group, with a 95% interval."""
    correct = np.argmax(probabilities, axis=1) == trials.answer
    summary = {
        "trials": int(correct.size),
        "correct": int(correct.sum()),
        "accuracy": float(correct.mean()),
        "ci95": list(wilson_interval(int(correct.sum()), int(correct.size))),
    }
    if group_names is not None:
        summary["per_run"] = {
            name: {
                "trials": int((trials.group == g).sum()),
                "correct": int(correct[trials.group == g].sum()),
                "accuracy": float(correct[trials.group == g].mean()),
            }
            for g, name in enumerate(group_names)
        }
    return summary


def evaluate_one_shot(model, variables: dict, eval_set: EvalSet, batch_size: int, group_names=None,
                      mesh: Mesh | None = None) -> dict:
    """One-shot summary of an EvalSet's trials."""
    embeddings = encode(model, variables, eval_set.images, batch_size, mesh)
    probabilities = trial_probabilities(model, variables, embeddings, eval_set.trials, mesh)
    return one_shot_summary(probabilities, eval_set.trials, group_names)


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve: the chance that a random positive outscores a random negative (ties half)."""
    from scipy.stats import rankdata

    positive = np.asarray(positive, bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("the ROC AUC needs both positive and negative pairs")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def validation_set(images: np.ndarray, groups: np.ndarray, labels: np.ndarray, indices: np.ndarray, v,
                   prepare=None) -> EvalSet:
    """Fixed v.way-way one-shot trials and verification pairs drawn from the images `indices`."""
    trials = random_trials(indices, groups, labels, v.way, 1, v.one_shot_trials, v.seed)
    pairs = random_pairs(indices, groups, labels, v.verification_pairs, v.seed + 1)
    return make_eval_set(images, trials, pairs, prepare)


class Validator:
    """Fixed validation trials and pairs, encoded together after each epoch."""

    def __init__(self, eval_set: EvalSet, batch_size: int, mesh: Mesh | None = None):
        self.eval_set = eval_set
        self.batch_size = batch_size
        self.mesh = mesh

    def __call__(self, model, variables: dict) -> dict:
        """Validation one-shot accuracy, verification accuracy (probability threshold 0.5) and ROC AUC."""
        embeddings = encode(model, variables, self.eval_set.images, self.batch_size, self.mesh)
        trials, pairs = self.eval_set.trials, self.eval_set.pairs
        one_shot = one_shot_summary(trial_probabilities(model, variables, embeddings, trials, self.mesh), trials)
        probabilities = pair_probabilities(model, variables, embeddings, pairs, self.mesh)
        verified = (probabilities > 0.5) == pairs.same
        return {
            "one_shot_accuracy": one_shot["accuracy"],
            "one_shot_trials": one_shot["trials"],
            "verification_accuracy": float(verified.mean()),
            "verification_auc": roc_auc(probabilities, pairs.same),
            "verification_pairs": int(verified.size),
        }


def omniglot_input(config):
    """Omniglot's `prepare`: ink masks to uint8 model input of the config's size."""
    return functools.partial(to_model_input, image_size=config.image_size)


def omniglot_validator(dataset: Omniglot, config, mesh: Mesh | None = None) -> Validator:
    """The Validator of an Omniglot config's validation split."""
    v = config.validation
    indices = dataset.select(v.set, v.alphabets, v.drawers)
    eval_set = validation_set(dataset.images, dataset.alphabet, dataset.character, indices, v, omniglot_input(config))
    return Validator(eval_set, config.eval_batch_size, mesh)


def runs_probabilities(model, variables: dict, config, runs: OneShotRuns, mesh: Mesh | None = None) -> np.ndarray:
    """Probability [T, N] of each support image for every trial of a runs archive, in runs_trials order."""
    runs_set = make_eval_set(runs.images, runs_trials(runs), prepare=omniglot_input(config))
    embeddings = encode(model, variables, runs_set.images, config.eval_batch_size, mesh)
    return trial_probabilities(model, variables, embeddings, runs_set.trials, mesh)


def evaluate_all(model, variables: dict, config, dataset: Omniglot, runs_path: str | Path,
                 mesh: Mesh | None = None) -> dict:
    """Everything the Omniglot evaluation reports: official runs, random test tasks, validation."""
    runs = load_runs(runs_path)
    probabilities = runs_probabilities(model, variables, config, runs, mesh)
    result = {"runs": {"path": str(runs_path), **one_shot_summary(probabilities, runs_trials(runs), runs.names)}}
    t = config.test
    indices = dataset.select(t.set, t.alphabets, t.drawers)
    tasks = random_trials(indices, dataset.alphabet, dataset.character, t.way, t.shots, t.tasks, t.seed)
    tasks_set = make_eval_set(dataset.images, tasks, prepare=omniglot_input(config))
    result["random_tasks"] = {
        "way": t.way,
        "shots": t.shots,
        "alphabets": list(t.alphabets),
        "drawers": list(t.drawers),
        **evaluate_one_shot(model, variables, tasks_set, config.eval_batch_size, mesh=mesh),
    }
    result["validation"] = omniglot_validator(dataset, config, mesh)(model, variables)
    return result


def format_table(result: dict) -> str:
    """A human-readable summary of evaluate_all's result."""
    runs, tasks, val = result["runs"], result["random_tasks"], result["validation"]
    lines = [f"{'run':<8}{'correct':>9}{'accuracy':>10}"]
    lines += [f"{name:<8}{r['correct']:>5}/{r['trials']:<3}{100 * r['accuracy']:>9.1f}%" for name, r in runs["per_run"].items()]
    lo, hi = runs["ci95"]
    lines.append(
        f"official runs ({runs['path']}): {runs['correct']}/{runs['trials']} = {100 * runs['accuracy']:.2f}% "
        f"(95% CI {100 * lo:.1f}-{100 * hi:.1f})"
    )
    lo, hi = tasks["ci95"]
    lines.append(
        f"random {tasks['way']}-way {tasks['shots']}-shot tasks: {100 * tasks['accuracy']:.2f}% over "
        f"{tasks['trials']} (95% CI {100 * lo:.1f}-{100 * hi:.1f})"
    )
    lines.append(
        f"validation: one-shot {100 * val['one_shot_accuracy']:.2f}% ({val['one_shot_trials']} trials), "
        f"verification {100 * val['verification_accuracy']:.2f}% ({val['verification_pairs']} pairs)"
    )
    return "\n".join(lines)


def load_workdir_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a training run saved in its workdir."""
    path = epath.Path(workdir) / "config.json"
    if not path.exists():
        raise DataError(f"{path} not found: --workdir must be a directory written by siamese_jax.train")
    return ml_collections.ConfigDict(json.loads(path.read_text()))


def restore_model(workdir: str, config, which: str, mesh: Mesh | None = None):
    """The model of a workdir and its 'best' or 'latest' variables, replicated over `mesh` (default: all devices).

    Checkpoints written with any device count restore onto any other.
    """
    from siamese_jax.checkpointing import Checkpoints  # Deferred: orbax is slow to import.

    model = build_model(config.model)
    like = jax.eval_shape(lambda: init_variables(model, jax.random.PRNGKey(0), input_shape(config)))
    where = distributed.replicated(mesh or distributed.data_mesh())
    like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=where), like)
    checkpoints = Checkpoints(workdir)
    variables = checkpoints.restore_variables(which, like)
    checkpoints.close()
    if variables is None:
        raise DataError(f"no {which} checkpoint in {workdir}/checkpoints: train first, or pass --checkpoint=latest")
    return model, variables


def write_json(result: dict, path: epath.PathLike) -> None:
    """Writes a result atomically."""
    path = epath.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(result, indent=2) + "\n")


