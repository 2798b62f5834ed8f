"""Every experiment config loads, passes the trainer's checks and builds its model."""

import jax
import pytest

from siamese_jax import train
from siamese_jax.models import build_model, init_variables, input_shape
from tests.conftest import REPO, load_config

CONFIGS = sorted(p.stem for p in (REPO / "configs").glob("*.py"))


def test_every_config_is_covered():
    assert {"omniglot", "omniglot_cpu", "lfw", "lfw_cpu", "folder"} <= set(CONFIGS)


def expected_parameters(config) -> int:
    """The parameter count of a config's network, from its layer shapes: convolutions (with a scale and bias per
    channel when normalised), 2x2 pooling after all but the last, the dense embedding, and the L1 head's alpha."""
    m = config.model
    side, channels, count = config.image_size, config.channels, 0
    for i, (features, kernel) in enumerate(zip(m.features, m.kernel_sizes)):
        count += kernel * kernel * channels * features + features + (2 * features if m.norm != "none" else 0)
        side = side - kernel + 1 if m.padding == "VALID" else side
        side = side // 2 if i < len(m.features) - 1 else side
        channels = features
    count += side * side * channels * m.embedding_dim + m.embedding_dim
    return count + (m.embedding_dim + 1 if m.head == "l1" else 0)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_validates_and_builds_its_model(name):
    config = load_config(name)
    train.validate_config(config, num_devices=1)
    model = build_model(config.model)
    variables = jax.eval_shape(lambda: init_variables(model, jax.random.PRNGKey(0), input_shape(config)))
    count = sum(x.size for x in jax.tree.leaves(variables["params"]))
    assert count == expected_parameters(config)
    if name in ("omniglot", "omniglot_fast"):
        assert count == 38_951_745  # The paper's network at 105x105, as the paper describes it.
