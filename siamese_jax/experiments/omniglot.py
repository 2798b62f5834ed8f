"""Omniglot, the paper's experiment: background drawers for training, evaluation alphabets for validation and test.

The test is Lake's 20 official within-alphabet 20-way one-shot runs, plus random within-alphabet
N-way K-shot tasks on the run alphabets; the MNIST transfer of the paper's section 4.4 is an
extra evaluation (evaluate --mnist).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import numpy as np
from jax.sharding import Mesh

from siamese_jax import transfer
from siamese_jax.evaluation import evaluators, scoring
from siamese_jax.data import images as image_files
from siamese_jax.data.omniglot import Omniglot, OneShotRuns, load_omniglot, load_runs, locate_runs
from siamese_jax.errors import ConfigError
from siamese_jax.experiments import base
from siamese_jax.tasks import Trials, random_trials

SETS = ("background", "evaluation")


def runs_trials(runs: OneShotRuns) -> Trials:
    """The trials of Lake-layout runs, indexing `runs.images`: every query against its run's support."""
    num_runs, num_queries = runs.query.shape
    support = np.repeat(runs.support[:, None, :, None], num_queries, axis=1)
    return Trials(
        support=support.reshape(num_runs * num_queries, -1, 1),
        query=runs.query.reshape(-1),
        answer=runs.answer.reshape(-1),
        group=np.repeat(np.arange(num_runs, dtype=np.int32), num_queries),
    )


class Experiment(base.Experiment):
    """Omniglot with the paper's split (config.train, config.validation, config.test)."""

    options = ("runs", "mnist", "mnist_tasks", "mnist_seed")
    input_style = "strokes"
    RANDOM_TASK_WAYS = (5, 10, 20)  # The random tasks support_sets offers.

    def check_config(self) -> None:
        """The sets and drawers of each split (alphabet names are checked against the data when it loads)."""
        for name in ("train", "validation", "test"):
            section = self.config[name]
            if section.set not in SETS:
                raise ConfigError(f"config.{name}.set must be one of {SETS}, got {section.set!r}")
            if not section.drawers or any(not 1 <= d <= 20 for d in section.drawers):
                raise ConfigError(f"config.{name}.drawers must be drawers among 1-20, got {tuple(section.drawers)}")

    @functools.cached_property
    def dataset(self) -> Omniglot:
        """Every Omniglot image, decoded once into the cache."""
        return load_omniglot(self.config.data_dir or None, self.config.cache_dir or None)

    def prepare(self, ink: np.ndarray) -> np.ndarray:
        """Ink masks -> uint8 model input of the config's size."""
        return image_files.to_model_input(ink, image_size=self.config.image_size)

    def split(self, section) -> evaluators.Split:
        """The images of a split section (set, alphabets, drawers)."""
        indices = self.dataset.select(section.set, section.alphabets, section.drawers)
        return evaluators.Split(self.dataset.images, self.dataset.alphabet, self.dataset.character, indices,
                                self.prepare)

    def training_set(self) -> base.TrainingSet:
        """The training split's images, alphabets and characters."""
        ids = self.split(self.config.train).indices
        return base.TrainingSet(self.prepare(self.dataset.images[ids]), self.dataset.alphabet[ids],
                                self.dataset.character[ids])

    def validation_split(self) -> evaluators.Split:
        """The validation alphabets and drawers."""
        return self.split(self.config.validation)

    def runs_scores(self, model, variables: dict, runs: OneShotRuns, mesh: Mesh | None = None) -> np.ndarray:
        """Score [T, N] (log probability) of each support image for every trial of a runs archive, in
        runs_trials order."""
        runs_set = scoring.make_eval_set(runs.images, runs_trials(runs), prepare=self.prepare)
        embeddings = scoring.encode(model, variables, runs_set.images, self.config.eval_batch_size, mesh)
        return scoring.trial_scores(model, variables, embeddings, runs_set.trials, mesh)

    def evaluate(self, model, variables: dict, mesh: Mesh | None = None, runs: str | None = None,
                 mnist: bool = False, mnist_tasks: int | None = None, mnist_seed: int = 0) -> dict:
        """Official runs (or `runs`), random test tasks, validation; the MNIST transfer with `mnist` or
        config.test.mnist_tasks > 0 (`mnist_tasks` tasks, default the config's, else 2,000)."""
        runs_path = runs or locate_runs(self.config.data_dir or None)
        loaded = load_runs(runs_path)
        scores = self.runs_scores(model, variables, loaded, mesh)
        result = {"runs": {"path": str(runs_path),
                           **scoring.one_shot_summary(scores, runs_trials(loaded), loaded.names)}}
        t = self.config.test
        split = self.split(t)
        tasks = random_trials(split.indices, split.groups, split.labels, t.way, t.shots, t.tasks, t.seed)
        tasks_set = scoring.make_eval_set(split.images, tasks, prepare=self.prepare)
        result["random_tasks"] = {
            "way": t.way, "shots": t.shots, "alphabets": list(t.alphabets), "drawers": list(t.drawers),
            **scoring.evaluate_one_shot(model, variables, tasks_set, self.config.eval_batch_size, mesh=mesh),
        }
        result["validation"] = self.validation(mesh)(model, variables, with_sizes=True)
        configured_tasks = self.config.test.mnist_tasks
        if mnist or configured_tasks > 0:
            tasks = mnist_tasks or configured_tasks or transfer.DEFAULT_TASKS
            result["mnist"] = transfer.evaluate_mnist(model, variables, self.config.image_size,
                                                      self.config.eval_batch_size, self.config.data_dir or None,
                                                      tasks, mnist_seed, mesh)
        return result

    def summarize(self, result: dict) -> str:
        """The per-run table, the random tasks, validation, and the MNIST lines when there are any."""
        runs, tasks, val = result["runs"], result["random_tasks"], result["validation"]
        lines = [f"{'run':<8}{'correct':>9}{'accuracy':>10}"]
        lines += [f"{name:<8}{r['correct']:>5}/{r['trials']:<3}{100 * r['accuracy']:>9.1f}%"
                  for name, r in runs["per_run"].items()]
        lines.append(f"official runs ({runs['path']}): {_accuracy_of(runs)}")
        lo, hi = tasks["ci95"]
        lines.append(f"random {tasks['way']}-way {tasks['shots']}-shot tasks: {100 * tasks['accuracy']:.2f}% over "
                     f"{tasks['trials']} (95% CI {100 * lo:.1f}-{100 * hi:.1f})")
        lines.append(evaluators.validation_line(val))
        if "mnist" in result:
            lines.append(transfer.format_mnist(result["mnist"]))
        return "\n".join(lines)

    def headline(self, result: dict) -> str:
        """The official runs' accuracy with its interval."""
        return f"Lake's 20 official runs: {_accuracy_of(result['runs'])}"

    def support_sets(self) -> dict[str, Callable[[], base.SupportSet]]:
        """Lake's 20 official runs ('run01' ... 'run20': 20 candidates, 20 queries; the runs archive is read here)
        and a random within-alphabet N-way task of the test alphabets for each N of RANDOM_TASK_WAYS
        ('random 5-way', ...)."""
        sets = {}
        for index, name in enumerate(self.official_runs.names):
            sets[name] = functools.partial(self.official_run, index)
        for way in self.RANDOM_TASK_WAYS:
            sets[f"random {way}-way"] = functools.partial(self.random_task, way)
        return sets

    @functools.cached_property
    def official_runs(self) -> OneShotRuns:
        """The official runs archive, loaded once."""
        return load_runs(locate_runs(self.config.data_dir or None))

    def official_run(self, index: int) -> base.SupportSet:
        """One official run: its 20 candidates ('candidate_01', ... in the run's order) and its 20 queries."""
        runs = self.official_runs
        names = tuple(f"candidate_{n + 1:02d}" for n in range(runs.support.shape[1]))
        return base.SupportSet(names, self.prepare(runs.images[runs.support[index]]),
                               self.prepare(runs.images[runs.query[index]]), runs.answer[index])

    def random_task(self, way: int) -> base.SupportSet:
        """A random within-alphabet `way`-way task of the test split (config.test): one drawing of each of `way`
        characters of one alphabet as the candidates, and another drawing of each as a query."""
        split = self.split(self.config.test)
        trials = random_trials(split.indices, split.groups, split.labels, way, 1, 1, self.config.test.seed + way)
        candidates = trials.support[0, :, 0]
        rng = np.random.default_rng(self.config.test.seed + way)
        queries = [rng.choice([i for i in split.indices if split.labels[i] == split.labels[c] and i != c])
                   for c in candidates]
        alphabet = self.dataset.alphabet_names[split.groups[candidates[0]]]
        names = tuple(f"{alphabet}_{n + 1:02d}" for n in range(way))
        return base.SupportSet(names, self.prepare(split.images[candidates]), self.prepare(split.images[queries]),
                               np.arange(way))

    def image_converter(self):
        """Any image file -> strokes on black at the model's input size."""
        size = self.config.image_size
        return lambda path: image_files.strokes_input(image_files.read_image_file(path), str(path), size)

    def report_figures(self, workdir: str, restore, out: Path, runs: str | None = None,
                       max_errors: int = 24, checkpoint: str = "best") -> list[Path]:
        """Accuracy per official run, a grid of wrong trials, and the trials page."""
        from siamese_jax import figures

        model, variables = restore()
        loaded = load_runs(runs or locate_runs(self.config.data_dir or None))
        trials = runs_trials(loaded)
        scores = self.runs_scores(model, variables, loaded)
        summary = scoring.one_shot_summary(scores, trials, loaded.names)
        return [
            figures.plot_runs(summary, out / "official_runs.png"),
            figures.plot_errors(loaded, trials, scores, out / "errors.png", max_errors),
            figures.write_page(figures.page_data(loaded, trials, scores),
                               f"One-shot trials of {Path(workdir).name} ({checkpoint} checkpoint)",
                               out / "trials.html"),
        ]


def _accuracy_of(runs: dict) -> str:
    """'366/400 = 91.50% (95% CI 88.4-93.9)' for the official runs' report."""
    lo, hi = runs["ci95"]
    return f"{runs['correct']}/{runs['trials']} = {100 * runs['accuracy']:.2f}% (95% CI {100 * lo:.1f}-{100 * hi:.1f})"
