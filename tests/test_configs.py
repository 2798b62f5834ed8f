"""Every experiment config loads, passes the trainer's checks and builds its model."""

import jax
import pytest

from siamese_jax import train
from siamese_jax.models import build_model, init_variables, input_shape
from tests.conftest import REPO, load_config

CONFIGS = sorted(p.stem for p in (REPO / "configs").glob("*.py"))


def test_every_config_is_covered():
    assert {"omniglot", "omniglot_cpu", "lfw", "lfw_cpu", "folder"} <= set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_validates_and_builds_its_model(name):
    config = load_config(name)
    train.validate_config(config, num_devices=1)
    model = build_model(config.model)
    variables = jax.eval_shape(lambda: init_variables(model, jax.random.PRNGKey(0), input_shape(config)))
    count = sum(x.size for x in jax.tree.leaves(variables["params"]))
    assert count > 10_000
    if name == "omniglot":
        assert count == 38_951_745  # The paper's network at 105x105.
