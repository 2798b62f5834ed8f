"""The siamese network of Koch et al. (2015): a convolutional twin encoder and a weighted L1 head.

Also, for faces: batch normalisation in the encoder, unit-length embeddings, and a Euclidean
distance head for the contrastive loss of Hadsell, Chopra & LeCun (2006).
"""

from __future__ import annotations

import functools
import itertools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from siamese_jax import conv, flops
from siamese_jax.errors import ConfigError

# The paper's initialisation, as (mean, std) of normal distributions.
PAPER_CONV_KERNEL = (0.0, 1e-2)
PAPER_DENSE_KERNEL = (0.0, 2e-1)
PAPER_BIAS = (0.5, 1e-2)


def normal_init(mean: float, std: float):
    """Returns a Flax initializer drawing from N(mean, std**2)."""

    def init(key, shape, dtype=jnp.float32):
        return mean + std * jax.random.normal(key, shape, dtype)

    return init


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max-pooling with stride 2 over NHWC, dropping an odd last row/column like VALID pooling."""
    # A max over four strided slices, not lax.reduce_window: the latter's gradient
    # (select_and_scatter) ran about 20x slower on XLA:CPU (results/cpu_kernels.json), and
    # elementwise maxima fuse on every backend.
    h, w = x.shape[1] // 2 * 2, x.shape[2] // 2 * 2
    x = x[:, :h, :w]
    top = jnp.maximum(x[:, 0::2, 0::2], x[:, 0::2, 1::2])
    bottom = jnp.maximum(x[:, 1::2, 0::2], x[:, 1::2, 1::2])
    return jnp.maximum(top, bottom)


def unit_length(x: jax.Array) -> jax.Array:
    """Rows of x scaled to Euclidean length 1 (float32; a zero row stays near zero)."""
    x = x.astype(jnp.float32)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


def average_views(embeddings: jax.Array, axis: int, normalize: bool) -> jax.Array:
    """The mean over `axis` of embeddings of views of one image, back to unit length when `normalize`."""
    mean = embeddings.astype(jnp.float32).mean(axis)
    return unit_length(mean) if normalize else mean


def _initializers(scheme: str, kind: str):
    """Kernel and bias initializers for a 'conv' or 'dense' layer under `scheme`."""
    if scheme == "paper":
        kernel = PAPER_CONV_KERNEL if kind == "conv" else PAPER_DENSE_KERNEL
        return normal_init(*kernel), normal_init(*PAPER_BIAS)
    if scheme == "lecun":
        # Variance-preserving kernels and zero biases: trains faster from scratch at small scale.
        return nn.initializers.lecun_normal(), nn.initializers.zeros
    raise ConfigError(f"unknown init scheme {scheme!r}; expected 'paper' or 'lecun'")


class Encoder(nn.Module):
    """Conv/ReLU/max-pool stack, then a sigmoid dense embedding (one twin of the network)."""

    features: Sequence[int] = (64, 128, 128, 256)
    kernel_sizes: Sequence[int] = (10, 7, 4, 4)
    embedding_dim: int = 4096
    padding: str = "VALID"
    init_scheme: str = "paper"
    norm: str = "none"
    embedding: str = "sigmoid"
    dropout: float = 0.0  # On the flattened convolutional features, in training only.
    first_layer_as_matmul: bool = False  # conv_0 as patches x kernel (conv.patches_conv_general_dilated).
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        """Maps images [B, H, W] or [B, H, W, C] in [0, 1] to embeddings [B, embedding_dim].

        `train` matters only with batch normalisation (batch statistics, and updated running
        averages in the 'batch_stats' collection, when True; the running averages when False) and
        with dropout (applied when True, from the 'dropout' RNG stream).
        """
        x = (images if images.ndim == 4 else images[..., None]).astype(self.dtype)
        conv_kernel, conv_bias = _initializers(self.init_scheme, "conv")
        for i, (width, size) in enumerate(zip(self.features, self.kernel_sizes)):
            x = nn.Conv(
                width,
                (size, size),
                padding=self.padding,
                kernel_init=conv_kernel,
                bias_init=conv_bias,
                dtype=self.dtype,
                conv_general_dilated=(conv.patches_conv_general_dilated if i == 0 and self.first_layer_as_matmul
                                      else conv.conv_general_dilated),
                name=f"conv_{i}",
            )(x)
            # Layer and group norms are stateless; batch norm keeps running averages in 'batch_stats'.
            if self.norm == "batch":
                x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype, name=f"norm_{i}")(x)
            elif self.norm == "layer":  # Over the channels at each position.
                x = nn.LayerNorm(dtype=self.dtype, name=f"norm_{i}")(x)
            elif self.norm == "group":  # Over positions and groups of 8 channels, per image.
                x = nn.GroupNorm(num_groups=None, group_size=min(8, width), dtype=self.dtype, name=f"norm_{i}")(x)
            x = nn.relu(x)
            # As in the paper, every convolution but the last is followed by 2x2 max-pooling.
            if i < len(self.features) - 1:
                x = max_pool_2x2(x)
        x = x.reshape(x.shape[0], -1)
        if self.dropout:
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        dense_kernel, dense_bias = _initializers(self.init_scheme, "dense")
        x = nn.Dense(
            self.embedding_dim,
            kernel_init=dense_kernel,
            bias_init=dense_bias,
            dtype=self.dtype,
            name="embed",
        )(x)
        if self.embedding == "normalize":  # Unit length: distances in [0, 2], one scale for a margin.
            return unit_length(x)
        return nn.sigmoid(x)


class L1Head(nn.Module):
    """Weighted L1 distance head: logit = sum_j alpha_j |h1_j - h2_j| + b."""

    init_scheme: str = "paper"

    @nn.compact
    def __call__(self, h1: jax.Array, h2: jax.Array) -> jax.Array:
        """Returns float32 logits [...] for embeddings h1, h2 of shape [..., D]."""
        kernel_init, bias_init = _initializers(self.init_scheme, "dense")
        distance = jnp.abs(h1.astype(jnp.float32) - h2.astype(jnp.float32))
        return nn.Dense(1, kernel_init=kernel_init, bias_init=bias_init, name="alpha")(distance)[..., 0]


class EuclideanHead(nn.Module):
    """Euclidean distance d; its logit is margin/2 - d, so that 'same' means closer than half the margin.

    The contrastive loss pulls same pairs to d = 0 and pushes different pairs beyond the margin;
    the logit is a monotone score for ranking and thresholds, not a calibrated probability.
    """

    margin: float = 1.0

    def distance(self, h1: jax.Array, h2: jax.Array) -> jax.Array:
        """Euclidean distances [...] between embeddings [..., D], float32."""
        squared = jnp.sum(jnp.square(h1.astype(jnp.float32) - h2.astype(jnp.float32)), axis=-1)
        return jnp.sqrt(squared + 1e-12)  # The epsilon keeps the gradient finite at d = 0.

    def __call__(self, h1: jax.Array, h2: jax.Array) -> jax.Array:
        """Logits [...]: margin/2 - distance."""
        return 0.5 * self.margin - self.distance(h1, h2)


class SiameseNet(nn.Module):
    """Twin encoder with shared weights and a head; both images are encoded in one batched call."""

    encoder: Encoder
    head_type: str = "l1"
    margin: float = 1.0
    test_time_flip: bool = False  # Outside training, embed each image and its mirror image and average.
    # Outside training, score every task under this many symmetries of the square of all its images (quarter turns;
    # with 8, of the mirror images too) and average the scores (evaluation.scoring.encode: an embedding per view).
    test_time_turns: int = 1

    def setup(self):
        if self.head_type == "euclidean":
            self.head = EuclideanHead(self.margin)
        else:
            self.head = L1Head(self.encoder.init_scheme)

    def __call__(self, images1: jax.Array, images2: jax.Array) -> jax.Array:
        """Logits that images1[i] and images2[i] show the same class."""
        embeddings = self.encoder(jnp.concatenate([images1, images2], axis=0))
        h1, h2 = jnp.split(embeddings, 2, axis=0)
        return self.head(h1, h2)

    @property
    def unit_length_embeddings(self) -> bool:
        """Whether embeddings have Euclidean length 1 (model.embedding='normalize'): views average back to it."""
        return self.encoder.embedding == "normalize"

    def embed(self, images: jax.Array, train: bool = False) -> jax.Array:
        """Encodes images [B, H, W] or [B, H, W, C] to embeddings [B, D] (see Encoder for `train`).

        With test_time_flip, outside training, the embedding is the mean of the image's and its
        left-right mirror's (back to unit length for unit-length embeddings): a face and its mirror
        show the same person, and averaging the two cancels some of the encoder's asymmetric noise.
        """
        embeddings = self.encoder(images, train)
        if train or not self.test_time_flip:
            return embeddings
        both = jnp.stack([embeddings, self.encoder(images[:, :, ::-1], False)])
        return average_views(both, 0, self.unit_length_embeddings)

    def score(self, h1: jax.Array, h2: jax.Array) -> jax.Array:
        """Scores embeddings with the head alone (broadcasting over leading axes)."""
        return self.head(h1, h2)

    def distance(self, h1: jax.Array, h2: jax.Array) -> jax.Array:
        """The Euclidean head's distances (only for head_type='euclidean')."""
        return self.head.distance(h1, h2)


class SiameseEnsemble(nn.Module):
    """Trained twins of one input size scored as one model: an image's embedding is its members' embeddings side by
    side, and a pair's logit is that of the mean of the members' same-class probabilities (mean_probability_logit),
    the rule that combines test-time turns and shots. Evaluation, predict and the demo score with it as with a
    SiameseNet (embed, score, test_time_turns, unit_length_embeddings); it does not train.

    Build it with SiameseEnsemble.of; its variables hold each member's under 'members_0', 'members_1', ...
    (ensemble_variables).
    """

    members: Sequence[SiameseNet]

    @classmethod
    def of(cls, members: Sequence[SiameseNet]) -> "SiameseEnsemble":
        """The ensemble of `members`, each on modules of its own: a module object that two members held would
        share one set of parameters."""
        if any(member.unit_length_embeddings or member.head_type != "l1" for member in members):
            # The mean of the members' probabilities needs calibrated ones (the L1 head's sigmoid, not the
            # Euclidean head's margin score), and unit-length embeddings would not stay so side by side.
            raise ConfigError("an ensemble takes members with model.embedding='sigmoid' and model.head='l1' "
                              "(Omniglot, folders), not the face models' unit-length embeddings or Euclidean head")
        return cls(tuple(member.clone(encoder=member.encoder.clone()) for member in members))

    @property
    def test_time_turns(self) -> int:
        """The members' test-time turns (they agree: restore_ensemble checks)."""
        return self.members[0].test_time_turns

    @property
    def test_time_flip(self) -> bool:
        """The members' test_time_flip (they agree)."""
        return self.members[0].test_time_flip

    @property
    def unit_length_embeddings(self) -> bool:
        """False: members have sigmoid embeddings (SiameseEnsemble.of)."""
        return False

    def embed(self, images: jax.Array, train: bool = False) -> jax.Array:
        """The members' embeddings [B, D_1 + ... + D_k] of images [B, H, W(, C)], in member order."""
        return jnp.concatenate([member.embed(images, train).astype(jnp.float32) for member in self.members], axis=-1)

    def score(self, h1: jax.Array, h2: jax.Array) -> jax.Array:
        """The logit [...] of the mean same-class probability of each member's head on its own embeddings."""
        bounds = list(itertools.accumulate(member.encoder.embedding_dim for member in self.members))[:-1]
        logits = [member.score(a, b) for member, a, b in
                  zip(self.members, jnp.split(h1, bounds, axis=-1), jnp.split(h2, bounds, axis=-1))]
        return mean_probability_logit(jnp.stack(logits))


def ensemble_variables(member_variables: Sequence[dict]) -> dict:
    """The variables of a SiameseEnsemble of members with these variables (in member order)."""
    return {collection: {f"members_{i}": variables[collection] for i, variables in enumerate(member_variables)}
            for collection in member_variables[0]}


def mean_log_probability(logits: jax.Array) -> jax.Array:
    """log of the mean same-class probability over the last axis (the K shots), computed without rounding.

    In float32 the sigmoid itself is exactly 1.0 for logits above about 17, so a confident model's
    candidates would tie; log-sigmoid keeps them apart, and log-mean-exp averages the shots.
    """
    return jax.nn.logsumexp(jax.nn.log_sigmoid(logits.astype(jnp.float32)), axis=-1) - jnp.log(logits.shape[-1])


def mean_probability_logit(logits: jax.Array) -> jax.Array:
    """Logits [V, ...] -> the logit [...] of the mean of their V same-class probabilities (log(p / (1 - p)) with
    log p and log(1 - p) each from mean_log_probability: exact where the probabilities round to 1.0)."""
    logits = jnp.moveaxis(jnp.asarray(logits), 0, -1)
    return mean_log_probability(logits) - mean_log_probability(-logits)  # log(1 - sigmoid(x)) = log_sigmoid(-x).


def compute_dtype(name: str, backend: str | None = None):
    """The encoder's compute dtype for model.dtype: 'float32', 'bfloat16', or 'auto'.

    'auto' is bfloat16 on GPUs and TPUs, whose matrix units run it several times faster than
    float32, and float32 on CPUs, where bfloat16 convolutions are slower. Parameters, optimiser
    state, the head and the loss stay float32 either way.
    """
    if name == "auto":
        name = "float32" if (backend or jax.default_backend()) == "cpu" else "bfloat16"
    dtypes = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
    if name not in dtypes:
        raise ConfigError(f"model.dtype must be 'auto', 'float32' or 'bfloat16', got {name!r}")
    return dtypes[name]


def build_model(model_config) -> SiameseNet:
    """Builds the network described by a config's `model` section."""
    dtype = compute_dtype(model_config.dtype)
    if model_config.norm not in ("none", "layer", "group", "batch"):
        raise ConfigError(f"model.norm must be 'none', 'layer', 'group' or 'batch', got {model_config.norm!r}")
    embedding, head = model_config.embedding, model_config.head
    if embedding not in ("sigmoid", "normalize"):
        raise ConfigError(f"model.embedding must be 'sigmoid' or 'normalize', got {embedding!r}")
    if head not in ("l1", "euclidean"):
        raise ConfigError(f"model.head must be 'l1' or 'euclidean', got {head!r}")
    dropout = model_config.dropout
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ConfigError(f"config.model.dropout must be a rate in [0, 1), got {dropout!r}")
    if len(model_config.features) != len(model_config.kernel_sizes):
        raise ConfigError("model.features and model.kernel_sizes must have the same length")
    encoder = Encoder(
        features=tuple(model_config.features),
        kernel_sizes=tuple(model_config.kernel_sizes),
        embedding_dim=model_config.embedding_dim,
        padding=model_config.padding,
        init_scheme=model_config.init,
        norm=model_config.norm,
        embedding=embedding,
        dropout=float(model_config.dropout),
        first_layer_as_matmul=bool(model_config.first_layer_as_matmul),
        dtype=dtype,
    )
    turns = model_config.test_time_turns
    if isinstance(turns, bool) or turns not in TEST_TIME_TURNS:
        raise ConfigError(f"config.model.test_time_turns must be one of {TEST_TIME_TURNS} (symmetries of the "
                          f"square scored and averaged at test time: turns, and with 8 mirror images too), got {turns!r}")
    return SiameseNet(encoder, head_type=head, margin=float(model_config.margin),
                      test_time_flip=bool(model_config.test_time_flip), test_time_turns=int(turns))


# 1: each image as it is; 2: also turned by 180 degrees; 4: by each quarter turn; 8: each quarter turn of the
# image and of its mirror image (evaluation.scoring.symmetric_views).
TEST_TIME_TURNS = (1, 2, 4, 8)


def smallest_feature_map(image_size: int, model_config) -> tuple[str, int]:
    """The layer whose output is smallest for square inputs of `image_size`, and that output's side."""
    layers = flops.encoder_flops(image_size, 1, model_config.features, model_config.kernel_sizes,
                                 model_config.padding, model_config.embedding_dim)[:-1]
    smallest = min(layers, key=lambda layer: layer.output_shape[0])
    return smallest.name, smallest.output_shape[0]


def check_image_size(image_size: int, model_config) -> None:
    """Rejects an image size at which some convolution (or the pooling after it) would have no output."""
    if not isinstance(image_size, int) or image_size < 1:
        raise ConfigError(f"config.image_size must be a positive integer, got {image_size!r}")
    name, side = smallest_feature_map(image_size, model_config)
    if side < 1:
        # Every layer's output grows with the input, so some larger size fits.
        fits = next(size for size in itertools.count(image_size + 1) if smallest_feature_map(size, model_config)[1] >= 1)
        raise ConfigError(
            f"config.image_size={image_size} is too small for the encoder: {name} would have a {side}x{side} "
            f"output (kernel sizes {tuple(model_config.kernel_sizes)}, {model_config.padding} padding, 2x2 "
            f"pooling between convolutions); use config.image_size >= {fits}")


def input_shape(config) -> tuple[int, ...]:
    """Shape of one model input: (S, S) for grayscale, (S, S, C) for colour (config.channels)."""
    channels = config.channels
    size = config.image_size
    return (size, size) if channels == 1 else (size, size, channels)


def init_variables(model: SiameseNet, key: jax.Array, shape: tuple[int, ...]) -> dict:
    """Initial variables for inputs of `shape` (see input_shape): 'params', and 'batch_stats' with batch norm."""
    dummy = jnp.zeros((1, *shape), jnp.float32)
    return dict(_initial_variables(model, key, dummy))


@functools.partial(jax.jit, static_argnums=0)
def _initial_variables(model: SiameseNet, key: jax.Array, dummy: jax.Array):
    """model.init as one compiled program per model, instead of a few dozen eager ones. The values are those of
    eager initialisation, bit for bit, except init='paper''s normal draws, which differ in their last bits."""
    return model.init(key, dummy, dummy)
