"""The project's default XLA flags: added where the user named none, left alone where they did, and in effect in XLA."""

import json
import subprocess
import sys

import pytest

from siamese_jax import xla_flags
from tests.conftest import REPO

INSTALLED = xla_flags.defaults(xla_flags.jaxlib_release(), xla_flags.cpu_features())  # What this machine gets.
JAXLIB_0_10, JAXLIB_0_11, JAXLIB_0_12 = (0, 10), (0, 11), (0, 12)
YNN, ONEDNN = "xla_cpu_experimental_ynn_fusion_type", "xla_cpu_experimental_onednn_custom_call"
BF16_PROCESSOR = frozenset({"sse4_2", "avx2", "avx512f", "avx512_bf16"})


@pytest.fixture
def on(monkeypatch):
    """on(release, features): pretend this jaxlib release runs on a processor with these features."""
    monkeypatch.setattr(xla_flags, "backend_started", lambda: False)

    def pretend(release, features=BF16_PROCESSOR):
        monkeypatch.setattr(xla_flags, "jaxlib_release", lambda: release)
        monkeypatch.setattr(xla_flags, "cpu_features", lambda: frozenset(features))

    return pretend


def test_defaults_are_added_to_what_the_user_set(on):
    on(JAXLIB_0_10)
    environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    assert xla_flags.apply_defaults(environ) == {YNN: ""}
    assert environ["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=2", f"--{YNN}="]
    environ = {}
    xla_flags.apply_defaults(environ)
    assert xla_flags.named_flags(environ["XLA_FLAGS"]) == {YNN}


@pytest.mark.parametrize("release", [JAXLIB_0_11, JAXLIB_0_12])
def test_onednn_calls_are_a_default_only_where_the_processor_has_bfloat16_instructions(on, release):
    on(release)  # AVX-512 BF16, and no flag of the user's: the oneDNN path.
    environ = {}
    assert xla_flags.apply_defaults(environ) == {ONEDNN: "true"} and environ["XLA_FLAGS"] == f"--{ONEDNN}=true"
    on(release, BF16_PROCESSOR - {"avx512_bf16"})  # AVX-512 without BF16 (or AVX2 only): left alone.
    environ = {}
    assert xla_flags.apply_defaults(environ) == {} and environ == {}
    on(release, frozenset())  # No /proc/cpuinfo: nothing is known, nothing is added.
    assert xla_flags.apply_defaults({}) == {}


@pytest.mark.parametrize("release, flag", [(JAXLIB_0_10, YNN), (JAXLIB_0_11, ONEDNN), (JAXLIB_0_12, ONEDNN)])
@pytest.mark.parametrize("users", ["--{flag}=", "--{flag}=false", "-{flag}=x --other=1"])
def test_a_flag_the_user_set_is_left_alone(on, release, flag, users):
    on(release)
    environ = {"XLA_FLAGS": users.format(flag=flag)}
    assert xla_flags.apply_defaults(environ) == {}
    assert environ["XLA_FLAGS"] == users.format(flag=flag)


@pytest.mark.parametrize("value", ["0", "off", "false"])
@pytest.mark.parametrize("release", [JAXLIB_0_10, JAXLIB_0_11, JAXLIB_0_12])
def test_opting_out_adds_nothing(on, release, value):
    on(release)
    environ = {xla_flags.OPT_OUT: value}
    assert xla_flags.apply_defaults(environ) == {} and "XLA_FLAGS" not in environ


def test_an_unmeasured_jaxlib_gets_no_flags(on):
    # An XLA that does not know a flag aborts at start-up, so unknown releases are left alone.
    for release in ((0, 4), (0, 13), None):
        on(release)
        environ = {}
        assert xla_flags.apply_defaults(environ) == {} and environ == {}


def test_cpu_features_are_the_flags_of_the_first_processor(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse4_2 avx512f avx512_bf16\n\n"
                   "processor\t: 1\nflags\t\t: fpu\n")
    assert xla_flags.cpu_features(str(x86)) == {"fpu", "sse4_2", "avx512f", "avx512_bf16"}
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd sve\n")
    assert xla_flags.cpu_features(str(arm)) == {"fp", "asimd", "sve"}
    assert xla_flags.cpu_features(str(tmp_path / "none")) == frozenset()  # No such file: nothing known.


def test_a_started_backend_gets_a_warning_not_flags(on, monkeypatch):
    on(JAXLIB_0_10)
    monkeypatch.setattr(xla_flags, "backend_started", lambda: True)
    environ = {}
    with pytest.warns(UserWarning, match="import siamese_jax first"):
        assert xla_flags.apply_defaults(environ) == {}
    assert environ == {}


# In a fresh process: what `import siamese_jax` leaves in XLA_FLAGS, what the provenance records, and
# the bits of a convolution's result, in float32 and bfloat16. YNNPACK's, oneDNN's and XLA's own kernels sum in
# different orders, so the bits tell which one XLA ran (the compiled HLO is the same either way).
PROBE = """
import hashlib, json, os
import numpy as np
import siamese_jax
import jax
from siamese_jax.provenance import provenance
conv = jax.jit(lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")))
x = jax.random.normal(jax.random.PRNGKey(0), (2, 20, 20, 64))
k = jax.random.normal(jax.random.PRNGKey(1), (7, 7, 64, 32))
record = provenance()
digest = lambda y: hashlib.sha256(np.asarray(y, np.float32).tobytes()).hexdigest()
print(json.dumps({"xla_flags": os.environ.get("XLA_FLAGS", ""),
                  "convolution": digest(conv(x, k)),
                  "convolution_bfloat16": digest(conv(x.astype("bfloat16"), k.astype("bfloat16"))),
                  "recorded": {k: record[k] for k in ("xla_flags", "xla_flags_added_by_siamese_jax")}}))
"""


def _probe(**env) -> dict:
    environ = {"PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu", **env}
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=environ, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


# Each default flag's value that gives back XLA's own path: YNNPACK for convolutions (jaxlib 0.10's default),
# no oneDNN calls; and the probe's result whose bits tell which kernel ran (oneDNN takes bfloat16 convolutions).
XLAS_OWN = {YNN: "individual_convolution", ONEDNN: "false"}
TELLS = {YNN: "convolution", ONEDNN: "convolution_bfloat16"}


@pytest.mark.slow
def test_the_default_reaches_xla_and_a_users_setting_wins():
    if not INSTALLED:
        pytest.skip(f"jaxlib {xla_flags.jaxlib_release()} on this processor gets no default flags")
    default = _probe()
    assert xla_flags.named_flags(default["xla_flags"]) == set(INSTALLED)
    assert default["recorded"] == {"xla_flags": default["xla_flags"], "xla_flags_added_by_siamese_jax": INSTALLED}
    # The same flags written by the user: nothing added, the same kernel.
    same = _probe(XLA_FLAGS=default["xla_flags"])
    assert same["xla_flags"] == default["xla_flags"] and same["recorded"]["xla_flags_added_by_siamese_jax"] == {}
    tells = TELLS[next(iter(INSTALLED))]
    assert same[tells] == default[tells]
    # XLA's own default path, through the opt-out: another kernel.
    opted_out = _probe(**{xla_flags.OPT_OUT: "0"})
    assert opted_out["xla_flags"] == "" and opted_out[tells] != default[tells]
    # The user's own value of the flag (XLA's own path) is left as it is and takes effect.
    users = " ".join(f"--{name}={XLAS_OWN[name]}" for name in INSTALLED)
    own = _probe(XLA_FLAGS=users)
    assert own["xla_flags"] == users and own["recorded"]["xla_flags_added_by_siamese_jax"] == {}
    assert own[tells] == opted_out[tells]
