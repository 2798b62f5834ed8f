"""The same config and seed give the same numbers as the recorded tiny runs: refactors must not change them.

The records in tests/golden/ were written by this test with SIAMESE_JAX_WRITE_GOLDEN=1 before the
code was restructured into experiment modules; tiny_lfw.json again when the augmentation's 2x2
solve became a closed-form inverse (a rounding change: the second epoch's loss moved by 1e-8, the
View 1 threshold by 4e-4), and when LFW reports gained the threshold source (new fields and
description; the metrics, threshold and accuracy unchanged). Every value of metrics.jsonl but the wall time,
and the evaluation's numbers, must match exactly. They are float results of XLA:CPU on 8 forced
devices, so the comparison is skipped under another JAX version than the one that wrote them.
"""

import json
import os
from pathlib import Path

import jax
import pytest

from siamese_jax import train
from tests.conftest import metrics, tiny_config, tiny_lfw_config

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


@pytest.mark.parametrize("name", ["omniglot", "lfw"])
def test_tiny_run_matches_its_record(name, synthetic_data_dir, synthetic_lfw_dir, cache_dir, tmp_path):
    if name == "omniglot":
        # The CPU config's recipe when the record was written, so that tuning the config later
        # does not change what this test compares.
        config = tiny_config(synthetic_data_dir, cache_dir, learning_rate=1e-3, lr_decay=0.9,
                             lr_schedule="exponential", warmup_epochs=0.0, patience=6)
        config.train.drawers = tuple(range(9, 21))
    else:  # Grayscale, no ranking loss, dropout, test-time flip, test crops or score normalisation, the
        # protocol's threshold: the LFW CPU recipe when the record was written.
        config = tiny_lfw_config(synthetic_lfw_dir, cache_dir, channels=1, ranking_loss_weight=0.0)
        config.model.test_time_flip = False
        config.model.dropout = 0.0
        config.lfw.threshold = "protocol"
        config.lfw.cohort_norm.images = 0
        config.lfw.test_crops = ()
    train.train_and_evaluate(config, str(tmp_path))
    numbers = _numbers(tmp_path)
    path = GOLDEN / f"tiny_{name}.json"
    if WRITE:
        path.write_text(json.dumps({"jax_version": jax.__version__, **numbers}, indent=1) + "\n")
        pytest.skip(f"wrote {path}")
    recorded = json.loads(path.read_text())
    if recorded.pop("jax_version") != jax.__version__:
        pytest.skip(f"{path.name} was written under JAX {recorded}; floats may differ under {jax.__version__}")
    assert numbers["metrics"] == recorded["metrics"]
    assert numbers["eval"] == recorded["eval"]
