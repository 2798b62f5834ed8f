"""siamese_jax: Koch et al. (2015)'s siamese networks for one-shot recognition, in JAX and Flax."""

from siamese_jax import xla_flags as _xla_flags

# Before any module of the package can start a JAX backend (siamese_jax/xla_flags.py says why).
_xla_flags.applied.update(_xla_flags.apply_defaults())
