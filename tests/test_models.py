"""The network: the paper's shapes, parameter count and initialisation."""

import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from siamese_jax.errors import ConfigError
from siamese_jax.models import (Encoder, SiameseNet, build_model, check_image_size, compute_dtype, init_variables,
                                max_pool_2x2, smallest_feature_map)
from tests.conftest import load_config


def test_paper_model_shapes_and_parameter_count():
    config = load_config("omniglot")
    model = build_model(config.model)
    dummy = jnp.zeros((1, 105, 105))
    params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), dummy, dummy))["params"]
    shapes = jax.tree.map(lambda x: x.shape, params)
    assert shapes["encoder"]["conv_0"]["kernel"] == (10, 10, 1, 64)
    assert shapes["encoder"]["conv_1"]["kernel"] == (7, 7, 64, 128)
    assert shapes["encoder"]["conv_2"]["kernel"] == (4, 4, 128, 128)
    assert shapes["encoder"]["conv_3"]["kernel"] == (4, 4, 128, 256)
    assert shapes["encoder"]["embed"]["kernel"] == (6 * 6 * 256, 4096)
    assert shapes["head"]["alpha"]["kernel"] == (4096, 1)
    assert sum(np.prod(s) for s in jax.tree.leaves(shapes, is_leaf=lambda x: isinstance(x, tuple))) == 38_951_745


def test_paper_initialisation_statistics():
    config = load_config("omniglot")
    params = init_variables(build_model(config.model), jax.random.PRNGKey(0), (105, 105))["params"]
    enc = params["encoder"]
    for layer in ("conv_1", "conv_2", "conv_3"):  # conv_0 has only 6,400 weights; checked loosely below.
        kernel = np.asarray(enc[layer]["kernel"])
        assert abs(kernel.mean()) < 1e-3 and kernel.std() == pytest.approx(0.01, rel=0.02)
    assert np.asarray(enc["conv_0"]["kernel"]).std() == pytest.approx(0.01, rel=0.05)
    dense = np.asarray(enc["embed"]["kernel"])
    assert abs(dense.mean()) < 1e-3 and dense.std() == pytest.approx(0.2, rel=0.01)
    alpha = np.asarray(params["head"]["alpha"]["kernel"])
    assert alpha.std() == pytest.approx(0.2, rel=0.1)
    biases = np.concatenate([np.asarray(enc[l]["bias"]) for l in ("conv_1", "conv_2", "conv_3", "embed")])
    assert biases.mean() == pytest.approx(0.5, abs=1e-3) and biases.std() == pytest.approx(0.01, rel=0.05)


def test_head_is_weighted_l1_and_symmetric():
    model = SiameseNet(Encoder(features=(4,), kernel_sizes=(3,), embedding_dim=8, padding="SAME", init_scheme="lecun"))
    params = init_variables(model, jax.random.PRNGKey(1), (12, 12))["params"]
    h1, h2 = jax.random.uniform(jax.random.PRNGKey(2), (2, 5, 8))
    logits = model.apply({"params": params}, h1, h2, method=SiameseNet.score)
    alpha, bias = params["head"]["alpha"]["kernel"][:, 0], params["head"]["alpha"]["bias"][0]
    np.testing.assert_allclose(logits, jnp.abs(h1 - h2) @ alpha + bias, rtol=1e-5)
    np.testing.assert_allclose(logits, model.apply({"params": params}, h2, h1, method=SiameseNet.score), rtol=1e-6)


def test_bfloat16_compute_keeps_float32_params_and_logits():
    config = load_config("omniglot_cpu")
    config.model.dtype = "bfloat16"
    model = build_model(config.model)
    params = init_variables(model, jax.random.PRNGKey(0), (28, 28))["params"]
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    x = jax.random.uniform(jax.random.PRNGKey(1), (3, 28, 28))
    logits = model.apply({"params": params}, x, x[::-1])
    assert logits.dtype == jnp.float32 and logits.shape == (3,)


def test_auto_dtype_is_bfloat16_on_accelerators_only():
    assert compute_dtype("auto", "cpu") == jnp.float32
    assert compute_dtype("auto", "gpu") == compute_dtype("auto", "tpu") == jnp.bfloat16
    assert compute_dtype("float32", "tpu") == jnp.float32
    with pytest.raises(ConfigError, match="model.dtype"):
        compute_dtype("float16")


@pytest.mark.parametrize("turns", [0, 3, True, "4"])
def test_test_time_turns_other_than_1_2_4_8_are_refused(turns):
    # A config file may set any type; a fresh ConfigDict takes it as written, where assigning to the
    # loaded config's int field would be refused by ml_collections itself (newer releases refuse "4").
    model_config = load_config("omniglot_cpu").model.to_dict()
    model_config["test_time_turns"] = turns
    with pytest.raises(ConfigError, match=r"config.model.test_time_turns must be one of \(1, 2, 4, 8\)"):
        build_model(ml_collections.ConfigDict(model_config))


def test_max_pool_matches_reduce_window():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 10, 3))
    expected = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    np.testing.assert_array_equal(max_pool_2x2(x), expected)


@pytest.mark.parametrize("embedding", ["normalize", "sigmoid"])
def test_test_time_flip_averages_an_image_and_its_mirror_outside_training(embedding):
    encoder = Encoder(features=(4, 8), kernel_sizes=(3, 3), embedding_dim=6, padding="SAME", init_scheme="lecun",
                      norm="batch", embedding=embedding)
    plain, flipped = SiameseNet(encoder, head_type="euclidean"), SiameseNet(encoder, head_type="euclidean",
                                                                            test_time_flip=True)
    variables = init_variables(plain, jax.random.PRNGKey(0), (10, 10, 3))
    images = jax.random.uniform(jax.random.PRNGKey(1), (5, 10, 10, 3))
    mirrors = images[:, :, ::-1]
    embed = lambda model, x: model.apply(variables, x, method=SiameseNet.embed)
    mean = 0.5 * (embed(plain, images) + embed(plain, mirrors))
    if embedding == "normalize":
        mean = mean / jnp.linalg.norm(mean, axis=-1, keepdims=True)
    np.testing.assert_allclose(embed(flipped, images), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(embed(flipped, mirrors), embed(flipped, images), rtol=1e-5, atol=1e-6)
    assert not np.allclose(embed(plain, mirrors), embed(plain, images), atol=1e-3)  # The encoder alone is not symmetric.
    # Training embeds each image once, as it is.
    train = lambda model: model.apply(variables, images, True, method=SiameseNet.embed, mutable=["batch_stats"])[0]
    np.testing.assert_allclose(train(flipped), train(plain), rtol=1e-6)


def test_build_model_reads_test_time_flip():
    config = load_config("lfw_cpu")
    assert build_model(config.model).test_time_flip is bool(config.model.test_time_flip)
    config.model.test_time_flip = not config.model.test_time_flip
    assert build_model(config.model).test_time_flip is bool(config.model.test_time_flip)


@pytest.mark.parametrize("features, kernels, padding", [((8,) * 4, (10, 7, 4, 4), "VALID"), ((8,) * 8, (10,) * 8, "VALID"),
                                                        ((8,) * 4, (3,) * 4, "SAME")])
def test_too_small_an_image_names_the_smallest_size_that_fits(features, kernels, padding):
    model = ml_collections.ConfigDict(dict(features=features, kernel_sizes=kernels, padding=padding, embedding_dim=4))
    with pytest.raises(ConfigError, match="is too small for the encoder") as error:
        check_image_size(4, model)
    fits = int(re.search(r"use config.image_size >= (\d+)", str(error.value)).group(1))
    check_image_size(fits, model)  # Fits, and one pixel less does not.
    assert smallest_feature_map(fits - 1, model)[1] < 1
