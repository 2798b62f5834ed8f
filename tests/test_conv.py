"""The convolution with the CPU kernel gradient: same values and gradients as XLA's own."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from siamese_jax import conv
from siamese_jax.models import SiameseNet, build_model, init_variables
from tests.conftest import load_config


def _loss(conv_fn, x, kernel, padding, strides=(1, 1)):
    dn = lax.conv_dimension_numbers(x.shape, kernel.shape, ("NHWC", "HWIO", "NHWC"))
    y = conv_fn(x, kernel, strides, padding, dimension_numbers=dn)
    return jnp.sum(jnp.sin(y)), y


@pytest.mark.parametrize("padding", ["VALID", "SAME", ((1, 2), (0, 3))])
@pytest.mark.parametrize("shape", [(2, 12, 12, 1, 5, 3), (3, 9, 11, 4, 3, 6)])
def test_values_and_gradients_match_xla(shape, padding):
    batch, height, width, cin, k, cout = shape
    x = jax.random.normal(jax.random.PRNGKey(0), (batch, height, width, cin))
    kernel = jax.random.normal(jax.random.PRNGKey(1), (k, k, cin, cout))
    grads = {}
    for name, fn in (("ours", conv.conv_general_dilated), ("xla", lax.conv_general_dilated)):
        (_, y), g = jax.value_and_grad(lambda x, k: _loss(fn, x, k, padding), argnums=(0, 1), has_aux=True)(x, kernel)
        grads[name] = (y, *g)
    for ours, xla in zip(grads["ours"], grads["xla"]):
        np.testing.assert_allclose(ours, xla, rtol=2e-4, atol=2e-4)


def test_strided_convolutions_fall_back_to_xla():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 10, 10, 3))
    kernel = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 3, 4))
    ours = jax.grad(lambda k: _loss(conv.conv_general_dilated, x, k, "VALID", (2, 2))[0])(kernel)
    xla = jax.grad(lambda k: _loss(lax.conv_general_dilated, x, k, "VALID", (2, 2))[0])(kernel)
    np.testing.assert_allclose(ours, xla, rtol=1e-5, atol=1e-5)


def test_kernel_grad_as_matmuls_is_the_correlation_of_input_and_output_grad():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 7, 2))
    dy = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 5, 3))
    grad = conv.kernel_grad_as_matmuls(x, dy, (3, 3, 2, 3), ((0, 0), (0, 0)))
    expected = np.zeros((3, 3, 2, 3))
    for i in range(3):
        for j in range(3):
            expected[i, j] = np.einsum("bhwc,bhwo->co", np.asarray(x)[:, i : i + 4, j : j + 5], np.asarray(dy))
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cin,padding", [(1, "VALID"), (3, "SAME"), (2, ((1, 2), (0, 3)))])
def test_patches_convolution_and_its_kernel_gradient_match_xla(cin, padding):
    key_x, key_k, key_dy = jax.random.split(jax.random.PRNGKey(cin), 3)
    x = jax.random.normal(key_x, (3, 17, 15, cin))
    kernel = jax.random.normal(key_k, (5, 4, cin, 6))

    def by_xla(k):
        return lax.conv_general_dilated(x, k, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        precision=lax.Precision.HIGHEST)

    def by_patches(k):
        return conv.patches_conv_general_dilated(x, k, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                                 precision=lax.Precision.HIGHEST)

    expected, xla_vjp = jax.vjp(by_xla, kernel)
    got, patches_vjp = jax.vjp(by_patches, kernel)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    dy = jax.random.normal(key_dy, expected.shape)
    np.testing.assert_allclose(patches_vjp(dy)[0], xla_vjp(dy)[0], rtol=1e-4, atol=1e-4)


def test_encoder_with_its_first_layer_as_matmul_computes_the_same_embeddings():
    config = load_config("omniglot")
    config.image_size, config.model.features, config.model.embedding_dim = 40, (8, 8, 8, 8), 16
    config.model.kernel_sizes, config.model.dtype = (5, 3, 3, 3), "float32"
    images = jax.random.uniform(jax.random.PRNGKey(0), (4, 40, 40))
    plain = build_model(config.model)
    variables = init_variables(plain, jax.random.PRNGKey(1), (40, 40))
    config.model.first_layer_as_matmul = True
    as_matmul = build_model(config.model)
    assert jax.tree.structure(init_variables(as_matmul, jax.random.PRNGKey(1), (40, 40))) == jax.tree.structure(variables)
    np.testing.assert_allclose(as_matmul.apply(variables, images, method=SiameseNet.embed),
                               plain.apply(variables, images, method=SiameseNet.embed), rtol=1e-4, atol=1e-5)
