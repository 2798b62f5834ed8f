"""The benchmarks and the GPU suite run (on the CPU, tiny), so they cannot rot; FLOPs match XLA's count."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from siamese_jax import flops, xla_flags
from tests import synthetic
from tests.conftest import DEVICE_COUNT, REPO, exit_message, load_config, metrics, tiny_config_file, xla_flags_less

TINY_MODEL = ["--config.image_size=16", "--config.model.features=(8,8)", "--config.model.kernel_sizes=(3,3)",
              "--config.model.embedding_dim=16"]
HAS_TORCH = importlib.util.find_spec("torch") is not None


def _run(*args, timeout=600, env=None):
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})})


def _last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


# The CPU config's group norms and ReLUs are about a tenth of its small network's gradient work: XLA's
# cost analysis counts them in its own fusions (71.9M against 65.3M per image with YNNPACK off, within
# 6% under YNNPACK, whose fusions it does not count).
@pytest.mark.parametrize("name, tolerance", [("omniglot", 0.01), ("omniglot_cpu", 0.12)])
def test_flops_from_layer_shapes_match_xla_cpu(name, tolerance, monkeypatch):
    """XLA:CPU counts every convolution; ours leaves out only elementwise work (norms, ReLU, pooling)."""
    from jax import lax

    from siamese_jax import conv
    from siamese_jax.models import SiameseNet, build_model, init_variables

    # XLA's own convolution gradients: conv.py's CPU kernel gradient loops over kernel rows, and
    # cost analysis counts a loop body once.
    monkeypatch.setattr(conv, "conv_general_dilated", lax.conv_general_dilated)
    config = load_config(name)
    config.model.dtype = "float32"
    model = build_model(config.model)
    params = init_variables(model, jax.random.PRNGKey(0), (config.image_size,) * 2)["params"]
    images = jnp.zeros((2, config.image_size, config.image_size))

    def loss(p, x):
        return model.apply({"params": p}, x, method=SiameseNet.embed).sum()

    def counted(fn):
        cost = jax.jit(fn).lower(params, images).compile().cost_analysis()
        return (cost[0] if isinstance(cost, list) else cost)["flops"] / 2

    assert counted(loss) == pytest.approx(flops.forward_flops_per_image(config), rel=tolerance)
    assert counted(jax.grad(loss)) == pytest.approx(flops.training_flops_per_image(config), rel=tolerance)
    assert counted(loss) >= flops.forward_flops_per_image(config) * 0.999


def test_paper_network_flops():
    config = load_config("omniglot")
    layers = {layer.name: layer for layer in flops.model_flops(config)}
    assert layers["conv_1"].output_shape == (42, 42, 128) and layers["conv_3"].output_shape == (6, 6, 256)
    assert layers["conv_0"].training == 2 * layers["conv_0"].forward  # No gradient for the image.
    # 10.67 GFLOP per training pair (two images), 78% of it in the second convolution.
    assert 2 * flops.training_flops_per_image(config) == pytest.approx(10.67e9, rel=1e-3)
    assert layers["conv_1"].training / flops.training_flops_per_image(config) == pytest.approx(0.797, abs=1e-3)
    assert flops.kernel_taps(5, 3, "SAME") == 3 * 5 - 2 and flops.kernel_taps(5, 3, "VALID") == 9


@pytest.mark.slow
def test_throughput_benchmark_runs_and_prints_its_json(tmp_path):
    output = tmp_path / "bench.json"
    frameworks = "jax,torch" if HAS_TORCH else "jax"
    done = _run("benchmarks/train_throughput.py", "--config=configs/omniglot_cpu.py", *TINY_MODEL,
                "--config.classes_per_group=4", "--config.images_per_class=2", "--config.steps_per_dispatch=3",
                "--batch_sizes=16,32", "--steps=1", "--repeats=1", "--breakdown", "--eval_batch=16",
                f"--frameworks={frameworks}", f"--output={output}", "--profile_steps=1",
                f"--profile_output={tmp_path / 'trace.json.gz'}", "--model_variants=first_layer_as_matmul=True")
    assert done.returncode == 0, done.stderr
    result = _last_json(done.stdout)
    assert result == json.loads(output.read_text()) and result["complete"] is True
    rows = [row for row in result["jax"] if row["model_variant"] is None]
    assert [row["batch_size"] for row in rows] == [16, 32]
    first = rows[0]
    assert first["pairs_per_step"] == 2 * 28 and first["images_per_step"] == 16  # Two groups of 4 x 2 images.
    assert first["steps_per_dispatch"] == 3
    assert first["pairs_per_s"] > 0 and first["pairs_per_s"] == pytest.approx(first["pairs_per_step"] / first["s_per_step"])
    assert first["eval_images_per_s"] > 0
    assert set(first["breakdown"]) == {"inputs_ms", "encoder_forward_ms", "encoder_forward_backward_ms", "images"}
    profile = first["profile"]
    assert profile["steps"] == 3 and profile["busy_ms_per_step"] > 0 and profile["top"][0]["ms_per_step"] > 0  # One call.
    assert (tmp_path / "trace.json.gz").stat().st_size > 0
    assert "profile" not in rows[1] and "breakdown" not in rows[1]  # First batch size only.
    # A model variant: one more row at the first batch size; the config's own setting stays the headline.
    (variant,) = [row for row in result["jax"] if row["model_variant"] is not None]
    assert variant["model_variant"] == "first_layer_as_matmul=True" and variant["batch_size"] == 16
    assert "profile" not in variant and variant["pairs_per_step"] == first["pairs_per_step"]
    assert result["jax_pairs_per_s"] == first["pairs_per_s"]
    assert result["jax_model_variant_pairs_per_s"] == {"first_layer_as_matmul=True": variant["pairs_per_s"]}
    assert result["platform"] == "cpu" and result["compute_dtype"] == "float32" and result["versions"]["jax"]
    assert result["training_flops_per_image"] == flops.training_flops_per_image(
        _tiny_cpu_config())
    if HAS_TORCH:
        assert result["torch_device"] == "cpu" and [r["mode"] for r in result["torch"]] == ["float32"] * 2
        assert result["ratio_to_fastest_torch"] == pytest.approx(first["pairs_per_s"] / result["torch_pairs_per_s"])


@pytest.mark.slow
def test_throughput_benchmark_keeps_finished_batch_sizes_and_reports_a_config_mistake_in_one_line(tmp_path):
    output = tmp_path / "bench.json"
    done = _run("benchmarks/train_throughput.py", "--config=configs/omniglot_cpu.py", *TINY_MODEL,
                "--config.classes_per_group=4", "--config.images_per_class=2", "--batch_sizes=16,12",
                "--steps=1", "--repeats=1", "--frameworks=jax", "--eval_batch=-1", f"--output={output}")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: sampling='groups' needs batch_size (12)")
    partial = json.loads(output.read_text())  # Written after batch 16, before batch 12 failed.
    assert partial["complete"] is False and [row["batch_size"] for row in partial["jax"]] == [16]


def _tiny_cpu_config():
    config = load_config("omniglot_cpu")
    config.image_size = 16
    config.model.features = (8, 8)
    config.model.kernel_sizes = (3, 3)
    config.model.embedding_dim = 16
    return config


@pytest.mark.slow
@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed (pip install torch==2.13.0 for the CPU wheel)")
def test_torch_baseline_alone_in_its_own_process():
    done = _run("benchmarks/train_throughput.py", "--config=configs/omniglot.py", "--config.image_size=40",
                "--config.model.kernel_sizes=(3,3,3,3)", "--config.model.features=(8,8,8,8)", "--batch_sizes=4",
                "--steps=1", "--repeats=1", "--frameworks=torch", "--torch_modes=float32,float32+channels_last")
    assert done.returncode == 0, done.stderr
    result = _last_json(done.stdout)
    assert result["jax"] == [] and [r["mode"] for r in result["torch"]] == ["float32", "float32+channels_last"]
    assert "ratio_to_fastest_torch" not in result and result["torch_pairs_per_s"] > 0


@pytest.fixture(scope="module")
def suite_config(synthetic_data_dir, cache_dir, tmp_path_factory):
    return tiny_config_file(tmp_path_factory.mktemp("suite") / "tiny.py", synthetic_data_dir, cache_dir, num_epochs=2)


@pytest.mark.slow
def test_gpu_suite_runs_benchmark_and_variants_and_writes_few_files(synthetic_data_dir, suite_config, tmp_path):
    output = tmp_path / "out"
    data_dir = tmp_path / "data"  # Omniglot and MNIST, as a job carries them.
    data_dir.mkdir()
    (data_dir / "omniglot").symlink_to(synthetic_data_dir / "omniglot")
    synthetic.make_mnist(data_dir)
    done = _run("benchmarks/gpu_suite.py", f"--data_dir={data_dir}", f"--output_dir={output}",
                "--variants=", f"--variant=plain={suite_config}",
                f"--variant=cosine={suite_config};--config.lr_schedule=cosine;--config.warmup_epochs=1",
                "--overrides=--config.validation.one_shot_trials=20 --config.test.tasks=10", f"--workdir_root={tmp_path / 'runs'}",
                f"--benchmark_flags=--config={suite_config} --batch_sizes=16 --steps=1 --repeats=1 --frameworks=jax "
                "--profile_steps=1",
                "--budget_s=900", "--startup_s=5", "--eval_s=5")
    assert done.returncode == 0, done.stderr
    files = sorted(p.name for p in output.iterdir())
    assert files == ["benchmark.json", "cosine.log", "plain.log", "profile.json.gz", "suite.log", "summary.json"]
    summary = json.loads((output / "summary.json").read_text())
    assert summary["benchmark"]["jax"][0]["pairs_per_s"] > 0
    runs = {run["name"]: run for run in summary["runs"]}
    assert set(runs) == {"plain", "cosine"}
    for run in runs.values():
        assert run["returncode"] == 0 and run["runs"]["trials"] == 8 and "per_run" not in run["runs"]
        assert [e["epoch"] for e in run["curve"]] == [1, 2] and run["training"]["stopped_by"] == "num_epochs"
        assert run["validation"]["one_shot_trials"] == 20 and "--config.max_train_seconds=" in run["command"]
        assert run["mnist"]["model"]["trials"] == 2000 and "--config.test.mnist_tasks=2000" in run["command"]
        # Table 1's measure beside ours: different pairs from anywhere in the split, and from one alphabet.
        assert {"verification_accuracy", "verification_any_group_accuracy"} <= set(run["validation"])
        assert run["best_validation"] == {"one_shot_accuracy": max(e["val_one_shot_accuracy"] for e in run["curve"])}
    assert "--config.lr_schedule=cosine" in runs["cosine"]["overrides"]
    # The runs' workdirs are this suite's own, in a new folder: a second suite would not resume them.
    (plain,) = (tmp_path / "runs").glob("suite_*/plain")
    assert (plain / "finished.json").exists() and f"--workdir={plain}" in runs["plain"]["command"]
    log = (output / "suite.log").read_text()
    assert "done in" in log and "1 device(s), batch 16, repeat 1: jax" in log  # The benchmark's lines too.
    assert "plain: official runs" in log and "best validation one_shot_accuracy" in log


@pytest.mark.slow
def test_gpu_suite_tune_job_runs_workers_of_one_study(synthetic_data_dir, suite_config, tmp_path):
    output = tmp_path / "out"
    # One worker here: tests/test_tune.py runs two on one journal file.
    done = _run("benchmarks/gpu_suite.py", f"--data_dir={synthetic_data_dir}", f"--output_dir={output}", "--job=tune",
                "--tune_workers=1", f"--tune_config={suite_config}", f"--workdir_root={tmp_path / 'runs'}",
                "--overrides=--config.tune.epochs=1 --config.tune.trials=2 --config.validation.one_shot_trials=20",
                "--budget_s=300", "--startup_s=5")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in output.iterdir()) == ["best_config.py", "suite.log", "summary.json", "trials.md",
                                                       "tune.log"]
    tune = json.loads((output / "summary.json").read_text())["tune"]
    assert tune["workers"] == 1 and tune["returncodes"] == [0]
    assert sorted(t["number"] for t in tune["trials"]) == [0, 1]
    for trial in tune["trials"]:  # Each of the config's space, one epoch.
        assert trial["state"] == "complete" and len(trial["curve"]) == 1 and set(trial["params"]) == {
            "learning_rate", "model.dropout", "augment.probability"}
    assert tune["best"]["value"] == max(t["value"] for t in tune["trials"])
    assert f"trial {tune['best']['number']} " in (output / "best_config.py").read_text().replace("Trial", "trial")
    assert "tune: 2 trials, 2 complete" in (output / "suite.log").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--data_dir={missing}"], "is not a folder"),
    (["--job=tune", "--variants=fast"], "runs in place of --variants"),
    (["--output_dir=/proc/forbidden"], "cannot write to --output_dir"),
    (["--budget_s=100", "--benchmark=false"], "--budget_s=100 is too small: variant fast needs about"),
    (["--variants=fastest"], "unknown variant 'fastest'"),
    (["--variants=paper", "--overrides=--config.no_such_key=1"], "no_such_key"),
])
def test_gpu_suite_bad_input_is_one_line_before_device_work(args, message, synthetic_data_dir, tmp_path):
    """In this process (test_every_gpu_job_names_known_variants_and_flags_and_fits_its_budget runs one as a
    command): one line."""
    defaults = {"--data_dir": str(synthetic_data_dir), "--output_dir": str(tmp_path / "out")}
    given = {a.split("=", 1)[0] for a in args}
    argv = [f"{k}={v}" for k, v in defaults.items() if k not in given]
    argv += [a.format(missing=tmp_path / "nothing") for a in args]
    line = exit_message(_import_gpu_suite(), *argv, f"--workdir_root={tmp_path / 'runs'}")
    assert "\n" not in line
    assert line.startswith("error: ") and message in line
    assert not (tmp_path / "runs").exists()  # Nothing started.


@pytest.mark.slow
def test_every_gpu_job_names_known_variants_and_flags_and_fits_its_budget(synthetic_data_dir, tmp_path):
    from absl import flags

    gpu_suite = _import_gpu_suite()
    suite_flags = flags.FlagValues()
    gpu_suite.define_flags(suite_flags)
    for name, preset in gpu_suite.JOBS.items():
        assert set(preset) <= set(suite_flags), name
        assert all(variant in gpu_suite.VARIANTS for variant in preset["variants"]), name
        assert preset["budget_s"] <= 570, name  # A lent machine's command gets 10 minutes, start-up included.
    # From the command line, a job's flags apply unless given: here its budget is cut and refused before any work.
    done = _run("benchmarks/gpu_suite.py", "--job=regularise", "--budget_s=100", f"--data_dir={synthetic_data_dir}",
                f"--output_dir={tmp_path / 'out'}", f"--workdir_root={tmp_path / 'runs'}", timeout=120)
    assert done.returncode != 0 and "variant fast_20_dropout needs about" in done.stderr


def _import_gpu_suite():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import gpu_suite
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    return gpu_suite


@pytest.mark.slow
def test_gpu_suite_missing_archives_named(tmp_path):
    (tmp_path / "data" / "omniglot").mkdir(parents=True)
    done = _run("benchmarks/gpu_suite.py", f"--data_dir={tmp_path / 'data'}", f"--output_dir={tmp_path / 'out'}",
                timeout=120)
    assert done.returncode != 0 and "all_runs.zip" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_cpu_kernels_benchmark_runs(tmp_path):
    done = _run("benchmarks/cpu_kernels.py", "--repeats=1", "--images=1", f"--output={tmp_path / 'k.json'}")
    assert done.returncode == 0, done.stderr
    result = _last_json(done.stdout)
    assert set(result["max_pool_2x2_fwd_bwd_128x28x28x64"]) == {"reduce_window_ms", "strided_slices_ms"}
    assert len(result["paper_conv_kernel_grad_1_images"]) == 4
    assert all(layer["forward_row_matmuls_ms"] > 0 for layer in result["paper_conv_kernel_grad_1_images"].values())


@pytest.mark.slow
def test_xla_cpu_flags_benchmark_runs_each_setting_in_its_own_process(suite_config, tmp_path):
    output = tmp_path / "flags.json"
    done = _run("benchmarks/xla_cpu_flags.py", f"--config={suite_config}", "--batch=16", "--steps=1",
                "--repeats=1", "--frameworks=jax", "--overrides=--config.model.dtype=bfloat16 --config.steps_per_dispatch=2",
                "--settings=project@@--config.model.dtype=float32;;--xla_no_such_flag=1,--xla_nor_this=2",
                f"--output={output}")
    assert done.returncode == 0, done.stderr
    project, bad = json.loads(output.read_text())["settings"]
    assert project["jax_pairs_per_s"] > 0 and project["steps_per_dispatch"] == 2  # --overrides reach every run,
    assert project["compute_dtype"] == "float32"  # and a setting's own come after them.
    # The child saw the project's defaults; tests/test_xla_flags.py shows that a user's value wins.
    expected = xla_flags.defaults(xla_flags.jaxlib_release(), xla_flags.cpu_features())
    # Less the device count that importing tests.conftest (for the tiny config) adds.
    seen = xla_flags_less(DEVICE_COUNT, xla_flags=project["xla_flags"])
    assert seen == " ".join(f"--{k}={v}" for k, v in expected.items())
    assert bad["setting"] == "--xla_no_such_flag=1,--xla_nor_this=2" and "error" in bad  # A setting XLA rejects is recorded, not fatal.


@pytest.mark.slow
def test_compare_runs_tool(trained_omniglot, tmp_path):
    import shutil

    _, workdir, _ = trained_omniglot
    other = tmp_path / "other"  # The same run with epoch 2's loss 10% higher, epoch 1's 5% lower, another result.
    shutil.copytree(workdir, other)
    records = metrics(other)
    losses = [r["train_loss"] for r in records]
    records[0]["train_loss"], records[1]["train_loss"] = losses[0] * 0.95, losses[1] * 1.1
    (other / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    result = json.loads((other / "eval.json").read_text())
    result["runs"]["accuracy"] = 0.123
    (other / "eval.json").write_text(json.dumps(result))
    output = tmp_path / "cmp.json"
    done = _run("benchmarks/compare_runs.py", f"--workdirs={workdir},{other}", f"--output={output}",
                "--commands=a;;b")
    assert done.returncode == 0, done.stderr
    report = json.loads(output.read_text())
    difference = report["train_loss_relative_difference"]
    assert report["epochs_compared"] == 2
    assert (difference["epoch_1"], difference["last"], difference["max"]) == pytest.approx((0.05, 0.1, 0.1))
    assert report["per_epoch"][1]["train_loss"] == pytest.approx([losses[1], losses[1] * 1.1])
    assert report["final"][1]["runs"]["accuracy"] == 0.123 != report["final"][0]["runs"]["accuracy"]
    assert "per_run" not in report["final"][0]["runs"] and "val_verification_auc" in report["per_epoch"][0]
    assert report["commands"] == ["a", "b"]


def test_every_gpu_suite_variant_parses_to_a_config_that_builds():
    gpu_suite = _import_gpu_suite()
    from siamese_jax.models import build_model

    for name in gpu_suite.VARIANTS:
        _, path, overrides = gpu_suite.parse_variant(name)
        config = gpu_suite.load_variant_config(str(REPO / path), overrides)
        build_model(config.model)  # Raises on a bad model section.
        assert config.num_epochs >= 1, name
    adamw = gpu_suite.load_variant_config(str(REPO / "configs/omniglot_fast.py"), gpu_suite.VARIANTS["fast_20_adamw"][1])
    assert adamw.weight_decay == 0.05 and adamw.num_epochs == 20
    paper_adam = gpu_suite.load_variant_config(str(REPO / "configs/omniglot.py"), gpu_suite.VARIANTS["paper_adam"][1])
    assert (paper_adam.optimizer, paper_adam.learning_rate, paper_adam.model.init) == ("adam", 1e-4, "paper")
    assert tuple(paper_adam.train.drawers) == tuple(range(1, 21)) and paper_adam.num_epochs == 20


def test_ci_fails_on_a_skip_that_the_allowed_list_does_not_name(tmp_path):
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "conftest.py").write_text(
        "import sys\nfrom pathlib import Path\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "import tests.conftest as project\n"
        "project.ALLOWED_SKIPS = Path(__file__).parent / 'allowed.txt'\n"
        "from tests.conftest import pytest_runtest_logreport, pytest_sessionfinish  # noqa: F401\n")
    (tmp_path / "test_probe.py").write_text(
        "import pytest\n\n\ndef test_runs():\n    pass\n\n\ndef test_needs_a_package():\n"
        "    pytest.skip('the package is not installed')\n")

    def pytest_in_ci(allowed: str):
        (tmp_path / "allowed.txt").write_text(allowed)
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "CI": "true"})

    refused = pytest_in_ci("# nothing may skip\n")
    assert refused.returncode == 1, refused.stdout
    assert "1 test(s) skipped in CI that tests/allowed_skips.txt does not allow" in refused.stdout
    assert "  test_probe.py::test_needs_a_package" in refused.stdout.splitlines()
    allowed = pytest_in_ci("test_probe.py::test_needs_a_package it needs a package CI cannot have\n")
    assert allowed.returncode == 0, allowed.stdout


def test_every_allowed_skip_names_a_test_with_a_reason():
    from tests.conftest import allowed_skips

    for test_id, reason in allowed_skips().items():
        path, _, name = test_id.partition("::")
        assert f"def {name.split('[')[0]}(" in (REPO / path).read_text(), test_id
        assert len(reason.split()) >= 4, test_id


def test_gpu_suite_keeps_each_ensemble_members_start_and_evaluation_out_of_training():
    gpu_suite = _import_gpu_suite()
    single, three = load_config("omniglot_cpu"), load_config("omniglot_cpu_ensemble")
    assert gpu_suite.reserved_seconds(single, startup_s=60, eval_s=45) == 105
    assert gpu_suite.reserved_seconds(three, startup_s=60, eval_s=45) == 3 * 105 + 45  # And the ensemble's own.
