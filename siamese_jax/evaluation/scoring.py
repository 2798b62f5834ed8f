"""Scoring a model on evaluation tasks: encode every distinct image once, then score pairs and trials with the head alone."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from siamese_jax import distributed
from siamese_jax.data.images import to_float
from siamese_jax.evaluation.metrics import wilson_interval
from siamese_jax.models import SiameseNet, average_views, mean_log_probability, mean_probability_logit
from siamese_jax.tasks import Pairs, Trials


TRIAL_CHUNK = 128  # Trials scored per call: bounds the [chunk, N, K, D] difference tensor.


@dataclasses.dataclass(frozen=True)
class EvalSet:
    """Model-ready images and the trials and/or pairs that index them."""

    images: np.ndarray  # uint8 [M, S, S(, C)], or [M, V, S, S(, C)]: V views of each (evaluation.encode_views)
    trials: Trials | None = None
    pairs: Pairs | None = None


def make_eval_set(images: np.ndarray, trials: Trials | None = None, pairs: Pairs | None = None,
                  prepare=None) -> EvalSet:
    """Keeps only the images the trials and pairs use, renumbers them, and applies `prepare`.

    `prepare` turns the kept images into uint8 model input (e.g. Omniglot's ink masks resized by
    to_model_input); None means they already are.
    """
    tasks = [t for t in (trials, pairs) if t is not None]
    kept, local = used_images(images, [ids for t in tasks for ids in t.image_ids()], prepare)
    return EvalSet(
        images=kept,
        trials=trials.renumbered(local) if trials else None,
        pairs=pairs.renumbered(local) if pairs else None,
    )


def used_images(images: np.ndarray, used: list[np.ndarray], prepare=None):
    """The images that the id arrays `used` name, each once and prepared (see make_eval_set), and the
    function that renumbers ids into positions among them."""
    ids = np.unique(np.concatenate([a.ravel() for a in used]))

    def local(a):
        return np.searchsorted(ids, a).astype(np.int32)

    kept = images[ids]
    return (prepare(kept) if prepare is not None else kept), local


def encode(model: SiameseNet, variables: dict, images: np.ndarray, batch_size: int, mesh: Mesh | None = None) -> jax.Array:
    """Embeddings [M, D] of uint8 images [M, S, S(, C)], in fixed-size batches split over the mesh's devices;
    [V, M, D] for a model with V = test_time_turns > 1: the images under each of V symmetries of the square
    (symmetric_views; trial_scores and pair_logits combine the V views: combined_log_probability).

    The batch size is rounded up to a multiple of the device count; the embeddings come back
    replicated on every device. `mesh` defaults to every device.
    """
    if model.test_time_turns > 1:
        return jnp.stack([encode_as_is(model, variables, view, batch_size, mesh)
                          for view in symmetric_views(images, model.test_time_turns)])
    return encode_as_is(model, variables, images, batch_size, mesh)


def symmetric_views(images: np.ndarray, count: int) -> list[np.ndarray]:
    """The `count` views of images [M, S, S(, C)] that test-time turns score: for 2 and 4, the images turned by
    each even step of a full turn; for 8, the four quarter turns of the images and then of their mirror images
    (the square's eight symmetries, in augment.square_symmetries' order, as orientations=8 trains on them)."""
    turns = range(0, 4, 4 // min(count, 4))
    sources = (images, images[:, :, ::-1]) if count == 8 else (images,)
    return [np.rot90(source, k, axes=(1, 2)) for source in sources for k in turns]


def encode_as_is(model: SiameseNet, variables: dict, images: np.ndarray, batch_size: int,
                 mesh: Mesh | None = None) -> jax.Array:
    """Embeddings [M, D] of uint8 images [M, S, S(, C)], unturned (see encode)."""
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


def encode_views(model: SiameseNet, variables: dict, views: np.ndarray, batch_size: int,
                 mesh: Mesh | None = None) -> jax.Array:
    """Embeddings [M, D] of images given as V views each, uint8 [M, V, S, S(, C)] (crops of one photo): the
    views' embeddings averaged, back to unit length for unit-length embeddings, as test_time_flip averages
    an image and its mirror image's."""
    count, num_views = views.shape[:2]
    flat = encode_as_is(model, variables, views.reshape(count * num_views, *views.shape[2:]), batch_size, mesh)
    return average_views(flat.reshape(count, num_views, -1), 1, model.unit_length_embeddings)


# The jitted functions are built once per model and mesh (linen modules hash by their fields):
# a fresh jax.jit per call would trace and compile again at every epoch's validation.
@functools.lru_cache(maxsize=8)
def embed_fn(model: SiameseNet, mesh: Mesh | None = None):
    """Jitted (variables, uint8 images [B, S, S(, C)]) -> embeddings [B, D], replicated over `mesh` if given."""
    return jax.jit(
        lambda variables, x: model.apply(variables, to_float(x), method="embed"),
        out_shardings=distributed.replicated(mesh) if mesh is not None else None,
    )


def replicated_inputs(mesh: Mesh | None, *trees):
    """Host or device values as arrays replicated over `mesh` (default: every device)."""
    where = distributed.replicated(mesh or distributed.data_mesh())
    return tuple(distributed.put(tree, where) for tree in trees)


def as_turns(embeddings: jax.Array) -> jax.Array:
    """Embeddings [V, M, D] of V turns, from encode's [M, D] (V = 1) or [V, M, D]."""
    return embeddings if embeddings.ndim == 3 else embeddings[None]


@functools.lru_cache(maxsize=8)
def _trial_score_fn(model: SiameseNet):
    @jax.jit
    def score(variables, embeddings, query, support):
        turns = as_turns(embeddings)
        h_query = turns[:, query][:, :, None, None, :]  # [V, T, 1, 1, D]
        logits = model.apply(variables, h_query, turns[:, support], method="score")  # [V, T, N, K]
        return combined_log_probability(logits)

    return score


def combined_log_probability(logits: jax.Array) -> jax.Array:
    """The one rule that combines test-time views and shots: logits [V, ..., K] of V views (turns) and K shots
    -> log of the mean same-class probability over all V * K of them [...].

    Trials, predict's rankings and the demo score a class with it; verification (K = 1) takes the logit of
    the same mean (combined_logit).
    """
    logits = jnp.moveaxis(jnp.asarray(logits), 0, -1)  # [..., K, V]
    return mean_log_probability(logits.reshape(*logits.shape[:-2], -1))


def combined_logit(logits: jax.Array) -> jax.Array:
    """Logits [V, P] of P pairs under V views -> the logit [P] of their mean same-class probability
    (combined_log_probability's rule); one view's logits unchanged."""
    logits = jnp.asarray(logits)
    if logits.shape[0] == 1:
        return logits[0].astype(jnp.float32)
    return mean_probability_logit(logits)


def trial_scores(model: SiameseNet, variables: dict, embeddings: jax.Array, trials: Trials,
                 mesh: Mesh | None = None) -> np.ndarray:
    """Score [T, N] of each trial's support classes for its query: the log of the mean same-class
    probability over the class's K shots and the V turns of embeddings [V, M, D] (query and support turned
    alike; combined_log_probability); exp() gives the probability."""
    score = _trial_score_fn(model)
    count = len(trials.query)
    pad = -count % TRIAL_CHUNK
    query = np.concatenate([trials.query, np.zeros(pad, np.int32)])
    support = np.concatenate([trials.support, np.zeros((pad, *trials.support.shape[1:]), np.int32)])
    variables, embeddings = replicated_inputs(mesh, variables, embeddings)
    out = list(distributed.paced(
        score(variables, embeddings, *replicated_inputs(mesh, query[i : i + TRIAL_CHUNK], support[i : i + TRIAL_CHUNK]))
        for i in range(0, len(query), TRIAL_CHUNK)
    ))
    return np.concatenate([np.asarray(chunk) for chunk in out])[:count]


def pair_logits(model: SiameseNet, variables: dict, embeddings: jax.Array, pairs: Pairs,
                mesh: Mesh | None = None) -> np.ndarray:
    """Logit [P] that each pair shows one class (sigmoid() gives the probability; ranking by logits
    never ties where float32 probabilities round to 1.0); for embeddings [V, M, D] of V turns, the
    logit of the mean probability of the pair turned alike (combined_logit)."""
    return np.asarray(combined_logit(view_pair_logits(model, variables, embeddings, pairs, mesh)))


def view_pair_logits(model: SiameseNet, variables: dict, embeddings: jax.Array, pairs: Pairs,
                     mesh: Mesh | None = None) -> jax.Array:
    """Logits [V, P] of each pair under each of the V views of embeddings [V, M, D] ([1, P] for [M, D])."""
    return _pair_score_fn(model)(*replicated_inputs(mesh, variables, embeddings, pairs.left, pairs.right))


def eval_set_pair_logits(model: SiameseNet, variables: dict, eval_set: EvalSet, batch_size: int,
                         mesh: Mesh | None = None) -> np.ndarray:
    """The logits [P] of an EvalSet's pairs: its images encoded once, then scored by the head."""
    embeddings = encode(model, variables, eval_set.images, batch_size, mesh)
    return pair_logits(model, variables, embeddings, eval_set.pairs, mesh)


@functools.lru_cache(maxsize=8)
def _pair_score_fn(model: SiameseNet):
    def score(variables, embeddings, left, right):
        turns = as_turns(embeddings)
        return model.apply(variables, turns[:, left], turns[:, right], method="score").astype(jnp.float32)

    return jax.jit(score)


def picked_correctly(scores: np.ndarray, answer: np.ndarray) -> np.ndarray:
    """Whether each trial's answer scores strictly above every other candidate: a tie at the top is wrong."""
    top = scores.max(axis=1, keepdims=True)
    return (scores[np.arange(len(answer)), answer] == top[:, 0]) & ((scores == top).sum(axis=1) == 1)


def chosen_candidates(scores: np.ndarray, answer: np.ndarray) -> np.ndarray:
    """The candidate each trial picks, as picked_correctly judges it: the answer when it scores strictly
    best, otherwise the best-scored other candidate."""
    others = np.where(np.arange(scores.shape[1]) == answer[:, None], -np.inf, scores)
    return np.where(picked_correctly(scores, answer), answer, others.argmax(axis=1))


def one_shot_summary(scores: np.ndarray, trials: Trials, group_names=None) -> dict:
    """Accuracy of picking the best-scored class (ties at the top count as wrong), overall and per group,
    with a 95% interval."""
    correct = picked_correctly(scores, trials.answer)
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
    return one_shot_summary(trial_scores(model, variables, embeddings, eval_set.trials, mesh), eval_set.trials,
                            group_names)
