"""The same config and seed give the same numbers as the recorded tiny runs: refactors must not change them.

Every value of metrics.jsonl but the wall time, and the evaluation's numbers, must match the record
to within 1e-6 under the JAX version, the XLA flags (which pick XLA:CPU's kernels) and on the processor
model and feature flags that wrote it (tests/golden/*.json name all four; they are float results of XLA:CPU on 8 forced
devices). Under another JAX or on another
processor, where XLA rounds some sums differently, they must match to within float noise: relative
1e-3, or 5e-3 absolute, since near-tied pair scores of the tiny model can swap and move its ROC AUC
by a few thousandths (0.9875 against 0.99 on an Intel Xeon for a record written on an AMD EPYC).
Any change to what a run draws or computes moves the losses and accuracies by far more.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from siamese_jax import xla_flags
from siamese_jax.provenance import host_processor

from tests.conftest import DEVICE_COUNT, REPO, devices_env, metrics, tiny_config, tiny_lfw_config, xla_flags_less

GOLDEN = Path(__file__).parent / "golden"
WRITE = os.environ.get("SIAMESE_JAX_WRITE_GOLDEN") == "1"


def _numbers(workdir: Path) -> dict:
    """What a run computed: its epoch records without the wall time, and its evaluation without provenance."""
    result = json.loads((workdir / "eval.json").read_text())
    result.pop("provenance", None)
    result["training"].pop("wall_time_s", None)
    result["training"].pop("stopped_by", None)  # Added after the records were written.
    result.get("runs", {}).pop("path", None)  # A temporary folder.
    result.get("lfw", {}).pop("logit_threshold", None)  # Added after the records were written.
    return {"metrics": [{k: v for k, v in r.items() if k != "wall_time"} for r in metrics(workdir)],
            "eval": result}


def _cpu_features() -> str:
    """A digest of the processor's feature flags: VMs often name only 'AMD EPYC', and EPYCs of two
    generations round the same XLA:CPU program differently (an LFW threshold 0.3886 against 0.3891)."""
    features = xla_flags.cpu_features()
    return hashlib.sha256(" ".join(sorted(features)).encode()).hexdigest()[:12] if features else ""


def _kernel_flags(xla_flags: str) -> str:
    """The XLA flags that choose kernels (and so roundings): `xla_flags` less the device count."""
    return " ".join(sorted(xla_flags_less(DEVICE_COUNT, xla_flags=xla_flags).split()))


def _within_noise(actual, expected, rel: float = 1e-3, abs_: float = 1e-3) -> bool:
    """Whether two JSON values have one structure, equal strings and integers, and floats within tolerance."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and actual.keys() == expected.keys() and all(
            _within_noise(actual[k], expected[k], rel, abs_) for k in expected)
    if isinstance(expected, list):
        return isinstance(actual, list) and len(actual) == len(expected) and all(
            _within_noise(a, e, rel, abs_) for a, e in zip(actual, expected))
    if isinstance(expected, float):
        return isinstance(actual, (int, float)) and actual == pytest.approx(expected, rel=rel, abs=abs_)
    return actual == expected


def golden_config(name: str, data_dir: Path, lfw_dir: Path, cache_dir: Path):
    """The config a record was written with."""
    if name == "omniglot":
        # The CPU config's recipe when the record was written, so that tuning the config later
        # does not change what this test compares.
        config = tiny_config(data_dir, cache_dir, learning_rate=1e-3, lr_decay=0.9, lr_schedule="exponential",
                             warmup_epochs=0.0, patience=6, orientations=1)
        config.train.drawers = tuple(range(9, 21))
        config.validation.evals = ("verification", "one_shot")
        return config
    # Grayscale, no ranking loss, dropout, test-time flip, test crops or score normalisation, the
    # protocol's threshold: the LFW CPU recipe when the record was written.
    config = tiny_lfw_config(lfw_dir, cache_dir, channels=1, ranking_loss_weight=0.0)
    config.model.test_time_flip = False
    config.model.dropout = 0.0
    config.lfw.threshold = "protocol"
    config.lfw.cohort_norm.images = 0
    config.lfw.test_crops = ()
    return config


@pytest.mark.slow
@pytest.mark.parametrize("name", ["omniglot", "lfw"])
def test_tiny_run_matches_its_record(name, synthetic_data_dir, synthetic_lfw_dir, cache_dir, tmp_path):
    # On the 8 forced CPU devices the records were written with, in a process of its own.
    code = ("from pathlib import Path; from siamese_jax import train; from tests.test_golden import golden_config; "
            f"train.train_and_evaluate(golden_config({name!r}, Path({str(synthetic_data_dir)!r}), "
            f"Path({str(synthetic_lfw_dir)!r}), Path({str(cache_dir)!r})), {str(tmp_path)!r})")
    env = {**os.environ, **devices_env(8, optimized=True)}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=env)
    assert done.returncode == 0, done.stderr
    numbers = _numbers(tmp_path)
    path = GOLDEN / f"tiny_{name}.json"
    if WRITE:
        path.write_text(json.dumps({"jax_version": jax.__version__, "host": host_processor(),
                                    "cpu_features": _cpu_features(), "xla_flags": _kernel_flags(env["XLA_FLAGS"]),
                                    **numbers}, indent=1) + "\n")
        pytest.skip(f"wrote {path}")
    recorded = json.loads(path.read_text())
    written_under = (recorded.pop("jax_version"), recorded.pop("host"), recorded.pop("cpu_features", None),
                     recorded.pop("xla_flags", ""))
    if written_under == (jax.__version__, host_processor(), _cpu_features(), _kernel_flags(env["XLA_FLAGS"])):
        assert _within_noise(numbers["metrics"], recorded["metrics"], rel=1e-6, abs_=1e-9), numbers["metrics"]
        assert _within_noise(numbers["eval"], recorded["eval"], rel=1e-6, abs_=1e-9), numbers["eval"]
    else:  # Another XLA or processor rounds differently: the same structure, every number within float noise.
        assert _within_noise(numbers, {"metrics": recorded["metrics"], "eval": recorded["eval"]}, abs_=5e-3)
