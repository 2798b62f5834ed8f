"""The XLA flags siamese_jax sets by default, put into XLA_FLAGS when the package is first imported.

XLA reads XLA_FLAGS once, when JAX starts its first backend, so the defaults have to be in the
environment before then. Every command, benchmark and test imports `siamese_jax` before it touches
a device, and the package's `__init__` calls `apply_defaults()`, so this is the one place they are
set. A flag the user already named in XLA_FLAGS is left as the user set it;
SIAMESE_JAX_XLA_DEFAULTS=0 applies none (docs: BUILD.md, "XLA flags").
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
import warnings

# Dots and convolutions as oneDNN calls: the paper network's step 1.10x (jaxlib 0.12: 1.08x) in float32 and
# 1.29x (1.34x) in bfloat16, the CPU config's within noise in float32 and 1.10x in bfloat16
# (results/xla_cpu_flags.json, "jax_0.11.2_onednn" and "jax_0.12.0.1_onednn", on an AMD EPYC with AVX-512 BF16).
# Given to every processor that reports avx512_bf16 and to none other: oneDNN picks its kernels by the
# processor, and it was never measured without those instructions.
ONEDNN_CALLS = {"xla_cpu_experimental_onednn_custom_call": ("true", ("avx512_bf16",))}

# Per jaxlib release (major, minor): the flags measured faster and correct there, each with its value and the
# processor features (/proc/cpuinfo's flags) it needs; XLA:CPU reads them, other backends ignore them. A release
# not listed gets none: an XLA that does not know a flag named in XLA_FLAGS aborts at start-up.
DEFAULTS_BY_RELEASE = {
    # YNNPACK off: jaxlib 0.10's XLA:CPU hands each 2-D float32 NHWC convolution (and some dots and
    # elementwise fusions) to YNNPACK, whose kernels ran the paper network's training step at 0.49-0.55x
    # PyTorch eager on 2 cores where XLA's own ran it at 0.95-1.08x, and the CPU config 1.11-1.16x
    # faster than with YNNPACK (results/xla_cpu_flags.json).
    (0, 10): {"xla_cpu_experimental_ynn_fusion_type": ("", ())},
    (0, 11): ONEDNN_CALLS,
    (0, 12): ONEDNN_CALLS,
}
OPT_OUT = "SIAMESE_JAX_XLA_DEFAULTS"

# What apply_defaults() added to XLA_FLAGS in this process, for the run's provenance.
applied: dict[str, str] = {}


def named_flags(xla_flags: str) -> set[str]:
    """The flag names in an XLA_FLAGS value, e.g. {'xla_cpu_use_xnnpack'} from '--xla_cpu_use_xnnpack=true'
    (XLA takes one leading dash or two)."""
    return {word.lstrip("-").split("=", 1)[0] for word in xla_flags.split() if word.startswith("-")}


def jaxlib_release() -> tuple[int, int] | None:
    """The installed jaxlib's (major, minor), without importing it; None where it is missing or unreadable."""
    try:
        major, minor = importlib.metadata.version("jaxlib").split(".")[:2]
        return int(major), int(minor)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None


def cpu_features(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The processor's feature flags from /proc/cpuinfo (e.g. 'avx512_bf16'); empty where there is none."""
    try:
        with open(cpuinfo) as info:
            line = next((line for line in info if line.startswith(("flags", "Features"))), "")
    except OSError:
        return frozenset()
    return frozenset(line.split(":", 1)[1].split()) if ":" in line else frozenset()


def defaults(release: tuple[int, int] | None, features: frozenset[str]) -> dict[str, str]:
    """The default flags (name -> value) for a jaxlib release on a processor with these features."""
    return {name: value for name, (value, needs) in DEFAULTS_BY_RELEASE.get(release, {}).items()
            if set(needs) <= features}


def backend_started() -> bool:
    """Whether JAX has already started a backend in this process (then XLA_FLAGS is read and final)."""
    bridge = sys.modules.get("jax._src.xla_bridge")
    started = getattr(bridge, "backends_are_initialized", None)
    return bool(started and started())


def apply_defaults(environ=os.environ) -> dict[str, str]:
    """Adds to `environ`'s XLA_FLAGS each default flag it does not name; returns the flags added."""
    if environ.get(OPT_OUT, "1").strip().lower() in ("0", "false", "no", "off"):
        return {}
    current = environ.get("XLA_FLAGS", "")
    added = {name: value for name, value in defaults(jaxlib_release(), cpu_features()).items()
             if name not in named_flags(current)}
    if not added:
        return {}
    if backend_started():
        warnings.warn(f"JAX started before siamese_jax was imported, so its default XLA flags {added} are not in "
                      "effect: import siamese_jax first, or put them in XLA_FLAGS yourself", stacklevel=3)
        return {}
    environ["XLA_FLAGS"] = " ".join([current, *(f"--{name}={value}" for name, value in added.items())]).strip()
    return added


def describe() -> dict:
    """The XLA flags in effect and which of them siamese_jax added, for a result's provenance."""
    return {"xla_flags": os.environ.get("XLA_FLAGS", ""), "xla_flags_added_by_siamese_jax": dict(applied)}
