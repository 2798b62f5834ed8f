"""Shared fixtures: a synthetic Omniglot, a tiny config, and the real data directory when present."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from siamese_jax import xla_flags
from siamese_jax.config_files import load_config_file
from tests import synthetic

# Every test process sees 2 CPU devices, so training and evaluation run data parallel throughout;
# tests that want fewer pass devices=jax.devices()[:n], and the few whose point is a larger device count
# run a process of their own with devices_env(8). Set before JAX starts its backend.
NUM_TEST_DEVICES = 2
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={NUM_TEST_DEVICES}").strip()
# Most of the suite's time is XLA:CPU compiling hundreds of small programs once each. At optimisation
# level 0 LLVM spends far less on them (results/test_suite_compile_level_cpu.json), and what the tests
# check, a program's results, agrees at either level; the golden runs compile as a user's run does
# (devices_env(optimized=True)) and match their records. Set in pytest_configure.
FAST_COMPILE = "--xla_backend_optimization_level=0"
# jaxlib 0.10's XLA:CPU compiles a training step in less than half the time with its LLVM fusion emitters
# instead of its MLIR ones (results/session_measurements_cpu_2026-12-05.json, "fifth_session"). Later
# releases have only the MLIR ones, and an XLA aborts on a flag it does not know. Their float results
# depend a little on the device count (a tiny run's loss on 1 and 8 devices 1.7e-4 apart after 6 steps,
# against 6e-8 with the MLIR ones): devices_env(mlir_emitters=True) for a test of that trajectory.
LLVM_EMITTERS = ("--xla_cpu_use_fusion_emitters=false",) if xla_flags.jaxlib_release() == (0, 10) else ()

REPO = Path(__file__).resolve().parent.parent

# Most of a tiny test run is XLA compiling the same small programs again: in each trial, fold,
# subprocess and test. JAX's persistent compilation cache keeps them for every test process
# (xdist workers and the subprocesses they start inherit the environment); a cached program is
# the very executable a compile would give, so results are unchanged.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO / ".pytest_cache" / "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


def pytest_configure(config):
    """Tests compile with FAST_COMPILE and LLVM_EMITTERS, each unless XLA_FLAGS already names its flag. Here rather
    than at import: a subprocess that imports this module for tiny_config compiles as its parent's environment
    says."""
    named = xla_flags.named_flags(os.environ["XLA_FLAGS"])
    added = [flag for flag in (FAST_COMPILE, *LLVM_EMITTERS) if xla_flags.named_flags(flag).isdisjoint(named)]
    os.environ["XLA_FLAGS"] = " ".join([os.environ["XLA_FLAGS"], *added]).strip()


# In CI (CI=true) a test may skip only where tests/allowed_skips.txt names it, with its reason; any other skip
# fails the run, so that a package CI could not install never turns the suite green unseen.
ALLOWED_SKIPS = Path(__file__).parent / "allowed_skips.txt"
_skipped: list[str] = []


def allowed_skips() -> dict[str, str]:
    """tests/allowed_skips.txt: test id (a parametrised test's id without its parameters matches them all) ->
    why it may skip in CI."""
    entries = {}
    for line in ALLOWED_SKIPS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            test_id, _, reason = line.partition(" ")
            entries[test_id] = reason.strip()
    return entries


def pytest_runtest_logreport(report):
    """Notes each skipped test (under xdist, the controller sees every worker's reports)."""
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    """In CI, fails the run on a skip that tests/allowed_skips.txt does not name."""
    if os.environ.get("CI") != "true" or hasattr(session.config, "workerinput"):
        return
    allowed = allowed_skips()
    unexpected = [test for test in _skipped if test.split("[")[0] not in allowed and test not in allowed]
    if unexpected:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        reporter.write_line(f"error: {len(unexpected)} test(s) skipped in CI that tests/allowed_skips.txt does not "
                            "allow (install what they need in .ci/run, or name them there with the reason):", red=True)
        for test in unexpected:
            reporter.write_line(f"  {test}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


DEVICE_COUNT = "--xla_force_host_platform_device_count"


def xla_flags_less(*prefixes: str, xla_flags: str | None = None) -> str:
    """`xla_flags` (by default this process's XLA_FLAGS) without the flags that start with any of `prefixes`."""
    flags = os.environ.get("XLA_FLAGS", "") if xla_flags is None else xla_flags
    return " ".join(f for f in flags.split() if not f.startswith(prefixes))


def devices_env(count: int, optimized: bool = False, mlir_emitters: bool = False) -> dict[str, str]:
    """Environment variables for a subprocess that sees `count` forced CPU devices; `optimized`: XLA compiles
    as in a user's run instead of the tests' FAST_COMPILE and LLVM_EMITTERS; `mlir_emitters`: without
    LLVM_EMITTERS alone."""
    dropped = (FAST_COMPILE, *LLVM_EMITTERS) if optimized else LLVM_EMITTERS if mlir_emitters else ()
    flags = xla_flags_less(DEVICE_COUNT, *dropped)
    return {"XLA_FLAGS": f"{flags} {DEVICE_COUNT}={count}".strip(), "JAX_PLATFORMS": "cpu"}



def free_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def load_config(name: str):
    """get_config() of configs/<name>.py."""
    return load_config_file(REPO / "configs" / f"{name}.py")


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory) -> Path:
    """A data directory holding synthetic Omniglot archives in the official layout."""
    return synthetic.make_omniglot(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """A decode cache private to the test session and shared by its xdist workers, so that the real datasets are
    decoded once a session, not once a worker: a cache file is keyed by its sources' paths, sizes and times and
    written atomically (data.sources.cached_arrays), so workers may fill it at once."""
    root = tmp_path_factory.getbasetemp()
    path = (root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root) / "decode_cache"
    path.mkdir(exist_ok=True)
    return path


def shrunk(config, cache_dir: Path):
    """A config cut to seconds: 16x16 input, two 8-channel convolutions, 3 steps of 16 images, 2 epochs, checkpoints
    at epoch ends."""
    config.cache_dir = str(cache_dir)
    config.image_size = 16
    config.model.features = (8, 8)
    config.model.kernel_sizes = (3, 3)
    config.model.embedding_dim = 16
    config.batch_size = 16
    config.classes_per_group = 4
    config.images_per_class = 2
    config.pairs_per_epoch = 168  # 3 steps of 2 groups x 28 pairs.
    config.num_epochs = 2
    config.checkpoint_every_steps = 1000  # At epoch ends only; tests of a save within an epoch ask for one.
    config.log_every_steps = 1
    config.eval_batch_size = 32
    config.model.test_time_turns = 1  # The tests that want turns set them; the golden runs were recorded without.
    config.momentum_ramp_epochs = 0  # The paper's SGD: mu_j from the start, since a ramp must end within the run.
    return config


def tiny_config(data_dir: Path, cache_dir: Path, base: str = "omniglot_cpu_adam", **overrides):
    """configs/`base`.py shrunk to seconds on the synthetic dataset; by default the CPU network with Adam
    (configs/omniglot_cpu_adam.py), the golden runs' recipe."""
    config = shrunk(load_config(base), cache_dir)
    config.data_dir = str(data_dir)
    config.train.alphabets = synthetic.BACKGROUND
    config.validation.alphabets = synthetic.VALIDATION
    config.validation.way = 4
    config.validation.one_shot_trials = 40
    config.validation.verification_pairs = 100
    config.test.alphabets = synthetic.TEST
    config.test.way = 4
    config.test.tasks = 40
    for key, value in overrides.items():
        config[key] = value
    return config


@pytest.fixture(scope="session")
def run01(synthetic_data_dir, tmp_path_factory) -> Path:
    """The synthetic all_runs.zip's run01, extracted: training/classNN.png, test/itemNN.png."""
    import zipfile

    folder = tmp_path_factory.mktemp("runs")
    with zipfile.ZipFile(synthetic_data_dir / "omniglot" / "all_runs.zip") as archive:
        archive.extractall(folder, members=[n for n in archive.namelist() if n.startswith("run01/")])
    return folder / "run01"


@pytest.fixture(scope="session")
def trained_omniglot(synthetic_data_dir, cache_dir, tmp_path_factory):
    """An uninterrupted tiny run on the synthetic Omniglot: its config, workdir and result. Read-only."""
    from siamese_jax import train

    config = tiny_config(synthetic_data_dir, cache_dir)
    workdir = tmp_path_factory.mktemp("uninterrupted")
    result = train.train_and_evaluate(config, str(workdir))
    return config, workdir, result


@pytest.fixture(scope="session")
def synthetic_lfw_dir(tmp_path_factory) -> Path:
    """A data directory holding a synthetic LFW (archive and the six protocol files)."""
    return synthetic.make_lfw(tmp_path_factory.mktemp("lfw_data"))


def tiny_lfw_config(data_dir: Path, cache_dir: Path, **overrides):
    """configs/lfw_cpu.py shrunk to seconds on the synthetic LFW."""
    config = shrunk(load_config("lfw_cpu"), cache_dir)
    config.data_dir = str(data_dir)
    config.lfw.validation_fraction = 0.25
    config.lfw.identification.ways = (4,)
    config.lfw.identification.tasks = 40
    config.validation.way = 4
    config.validation.one_shot_trials = 40
    config.validation.verification_pairs = 40
    for key, value in overrides.items():
        config[key] = value
    return config


@pytest.fixture(scope="session")
def trained_faces(synthetic_lfw_dir, cache_dir, tmp_path_factory):
    """A tiny View 1 run on the synthetic LFW: its workdir, config and result. Read-only."""
    from siamese_jax import train

    workdir = tmp_path_factory.mktemp("lfw_run")
    config = tiny_lfw_config(synthetic_lfw_dir, cache_dir)
    return workdir, config, train.train_and_evaluate(config, str(workdir))


def metrics(workdir: Path) -> list[dict]:
    """The records of a workdir's metrics.jsonl."""
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def exit_message(command, *args: str) -> str:
    """What a command module (its define_flags(values) and main(argv, values)) exits with for these arguments, run
    in this process: the string of its SystemExit, which the interpreter prints alone, with status 1 and no
    traceback."""
    from absl import flags

    values = flags.FlagValues()
    command.define_flags(values)
    with pytest.raises(SystemExit) as exited:
        command.main(values([command.__name__, *args]), values)
    assert isinstance(exited.value.code, str)
    return exited.value.code


def latest_steps(workdir: Path) -> list[int]:
    """The steps a workdir's latest checkpoints hold, oldest first."""
    return sorted(int(p.name) for p in (workdir / "checkpoints" / "latest").iterdir() if p.name.isdigit())


def latest_params(workdir: Path, config, devices=None):
    """The parameters of a workdir's latest state, replicated over `devices` (default: all)."""
    from siamese_jax import distributed
    from siamese_jax import workdir as workdir_files

    return workdir_files.restore_model(str(workdir), config, "latest", distributed.data_mesh(devices))[1]["params"]


def tiny_config_file(path: Path, data_dir: Path, cache_dir: Path, **overrides) -> Path:
    """Writes a config file whose get_config() is tiny_config(...), for runs in a subprocess."""
    path.write_text(
        "import sys\nfrom pathlib import Path\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from tests.conftest import tiny_config\n\n\n"
        "def get_config():\n"
        f"    return tiny_config(Path({str(data_dir)!r}), Path({str(cache_dir)!r}), **{overrides!r})\n"
    )
    return path


def real_data(folder: str, marker: str, name: str) -> Path:
    """The real data directory from $SIAMESE_JAX_DATA_DIR when it holds folder/marker; skips the test otherwise."""
    value = os.environ.get("SIAMESE_JAX_DATA_DIR")
    if not value or not (Path(value) / folder / marker).exists():
        pytest.skip(f"real {name} not available: set SIAMESE_JAX_DATA_DIR to a folder holding {folder}/")
    return Path(value)


@pytest.fixture
def real_data_dir() -> Path:
    """The real data directory when it holds Omniglot."""
    return real_data("omniglot", "images_background.zip", "Omniglot")


@pytest.fixture
def real_lfw_dir() -> Path:
    """The real data directory when it holds LFW."""
    return real_data("lfw", "pairs.txt", "LFW")
