"""The project's default XLA flags: added where the user named none, left alone where they did, and in effect in XLA."""

import json
import subprocess
import sys

import pytest

from siamese_jax import xla_flags
from tests.conftest import REPO

FLAG = next(iter(xla_flags.DEFAULTS))


@pytest.fixture
def measured_jaxlib(monkeypatch):
    monkeypatch.setattr(xla_flags, "jaxlib_release", lambda: xla_flags.MEASURED_ON[-1])
    monkeypatch.setattr(xla_flags, "backend_started", lambda: False)


def test_defaults_are_added_to_what_the_user_set(measured_jaxlib):
    environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    added = xla_flags.apply_defaults(environ)
    assert added == xla_flags.DEFAULTS
    assert environ["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=2",
                                            *(f"--{k}={v}" for k, v in xla_flags.DEFAULTS.items())]
    environ = {}
    xla_flags.apply_defaults(environ)
    assert xla_flags.named_flags(environ["XLA_FLAGS"]) == set(xla_flags.DEFAULTS)


@pytest.mark.parametrize("users", [f"--{FLAG}=", f"--{FLAG}=individual_convolution", f"-{FLAG}=x --other=1"])
def test_a_flag_the_user_set_is_left_alone(measured_jaxlib, users):
    environ = {"XLA_FLAGS": users}
    assert xla_flags.apply_defaults(environ) == {}
    assert environ["XLA_FLAGS"] == users


@pytest.mark.parametrize("value", ["0", "off", "false"])
def test_opting_out_adds_nothing(measured_jaxlib, value):
    environ = {xla_flags.OPT_OUT: value}
    assert xla_flags.apply_defaults(environ) == {} and "XLA_FLAGS" not in environ


def test_an_unmeasured_jaxlib_gets_no_flags(monkeypatch):
    # An XLA that does not know a flag aborts at start-up, so unknown releases are left alone.
    monkeypatch.setattr(xla_flags, "jaxlib_release", lambda: (0, 4))
    environ = {}
    assert xla_flags.apply_defaults(environ) == {} and environ == {}


def test_a_started_backend_gets_a_warning_not_flags(monkeypatch):
    monkeypatch.setattr(xla_flags, "jaxlib_release", lambda: xla_flags.MEASURED_ON[-1])
    monkeypatch.setattr(xla_flags, "backend_started", lambda: True)
    environ = {}
    with pytest.warns(UserWarning, match="import siamese_jax first"):
        assert xla_flags.apply_defaults(environ) == {}
    assert environ == {}


# In a fresh process: what `import siamese_jax` leaves in XLA_FLAGS, what the provenance records, and
# the bits of a convolution's result. YNNPACK's convolution kernel and XLA's own sum in different
# orders, so the bits tell which one XLA ran (the compiled HLO is the same either way).
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
print(json.dumps({"xla_flags": os.environ.get("XLA_FLAGS", ""),
                  "convolution": hashlib.sha256(np.asarray(conv(x, k)).tobytes()).hexdigest(),
                  "recorded": {k: record[k] for k in ("xla_flags", "xla_flags_added_by_siamese_jax")}}))
"""


def _probe(**env) -> dict:
    environ = {"PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu", **env}
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=environ, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_the_default_reaches_xla_and_a_users_setting_wins():
    if xla_flags.jaxlib_release() not in xla_flags.MEASURED_ON:
        pytest.skip(f"jaxlib {xla_flags.jaxlib_release()} gets no default flags")
    default = _probe()
    assert xla_flags.named_flags(default["xla_flags"]) == set(xla_flags.DEFAULTS)
    assert default["recorded"] == {"xla_flags": default["xla_flags"], "xla_flags_added_by_siamese_jax": xla_flags.DEFAULTS}
    # The same flags written by the user: nothing added, the same kernel.
    same = _probe(XLA_FLAGS=default["xla_flags"])
    assert same["xla_flags"] == default["xla_flags"] and same["recorded"]["xla_flags_added_by_siamese_jax"] == {}
    assert same["convolution"] == default["convolution"]
    # XLA's own default path, through the opt-out: another kernel.
    opted_out = _probe(**{xla_flags.OPT_OUT: "0"})
    assert opted_out["xla_flags"] == "" and opted_out["convolution"] != default["convolution"]
    # The user's own value of the flag (YNNPACK for convolutions) is left as it is and takes effect.
    users = f"--{FLAG}=individual_convolution"
    own = _probe(XLA_FLAGS=users)
    assert own["xla_flags"] == users and own["recorded"]["xla_flags_added_by_siamese_jax"] == {}
    assert own["convolution"] == opted_out["convolution"]
