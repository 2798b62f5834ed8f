"""Ensembles: runs of one config that differ in their seed, scored as one model (models.SiameseEnsemble).

    python -m siamese_jax.train --config=configs/omniglot_cpu_ensemble.py --workdir=DIR

A config with `ensemble_seeds` trains one member per seed, each a run of its own in DIR/seed_S (resumable like
any run; a finished member is kept; each has an equal share of config.max_train_seconds), then evaluates the members as one model into DIR/eval.json: a pair's
same-class probability is the mean of the members'. evaluate, predict, report and the demo take DIR as any
workdir (workdir.restore_model).
"""

from __future__ import annotations

from typing import Callable

import jax
from etils import epath

from siamese_jax import experiments, models
from siamese_jax import workdir as workdir_files
from siamese_jax.errors import ConfigError
from siamese_jax.provenance import provenance


def check_seeds(seeds) -> tuple[int, ...]:
    """config.ensemble_seeds as a tuple of distinct integers, two or more; one line for anything else."""
    seeds = tuple(seeds)
    if len(seeds) < 2 or len(set(seeds)) != len(seeds) or not all(
            isinstance(seed, int) and not isinstance(seed, bool) for seed in seeds):
        raise ConfigError(f"config.ensemble_seeds must be two or more distinct integer seeds (or () for one run), "
                          f"got {seeds!r}")
    return seeds


def check_config(config) -> tuple[int, ...]:
    """An ensemble config's seeds (check_seeds), after checking its members' network can be scored as an ensemble
    (models.SiameseEnsemble.of): before any member trains."""
    seeds = check_seeds(config.ensemble_seeds)
    models.SiameseEnsemble.of([models.build_model(config.model)] * len(seeds))
    return seeds


def member_config(config, seed: int):
    """The config a member trains under: the ensemble's with its own seed, as a single run, and an equal share of
    the ensemble's time limit (config.max_train_seconds bounds the whole ensemble's training)."""
    member = config.copy_and_resolve_references()
    member.seed = seed
    member.ensemble_seeds = ()
    member.max_train_seconds = float(config.max_train_seconds) / len(config.ensemble_seeds)
    return member


def training_record(members: list[tuple[int, str, dict]]) -> dict:
    """The ensemble's training record from its members' (seed, workdir, training record): their epochs, steps,
    pairs and seconds summed, and each member's own."""
    summed = {key: sum(record[key] for _, _, record in members) for key in ("epochs", "steps", "pairs", "wall_time_s")}
    return {**summed, "stopped_by": "members",
            "members": [{"seed": seed, "workdir": workdir, **record} for seed, workdir, record in members]}


def train_and_evaluate(config, workdir: str, train_member: Callable[[object, str], dict],
                       allow_config_change: bool = False) -> dict:
    """Trains each member of config.ensemble_seeds in turn with `train_member(config, workdir)` (a finished one is
    kept if it trained under its member's config, or with `allow_config_change`), then evaluates the ensemble into
    WORKDIR/eval.json and prints its summary."""
    seeds = check_config(config)
    primary = jax.process_index() == 0
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    if primary:
        workdir_files.clear_finished(workdir)
        workdir_files.write_json(config.to_dict(), epath.Path(workdir) / workdir_files.CONFIG)
    members = []
    for number, (seed, member_dir) in enumerate(zip(seeds, workdir_files.member_workdirs(workdir, seeds)), 1):
        member = member_config(config, seed)
        done = workdir_files.finished(member_dir)
        if done:  # Kept only if it trained under this member's config (workdir.RESUMABLE_KEYS aside).
            workdir_files.prepare(member_dir, member, allow_config_change)
        if primary:
            print(f"ensemble member {number} of {len(seeds)} (seed {seed}, {member_dir}): "
                  + ("finished earlier, kept" if done else "training"), flush=True)
        record = done["training"] if done else train_member(member, member_dir)["training"]
        members.append((seed, member_dir, record))
    experiment = experiments.build(config)
    model, variables = workdir_files.restore_model(workdir, config, "best")
    result = {"checkpoint": "best", **experiment.evaluate(model, variables),
              "training": training_record(members), "provenance": provenance()}
    if primary:
        workdir_files.write_json(result, workdir_files.evaluation_path(workdir))
        workdir_files.mark_finished(workdir, {"training": result["training"],
                                              "evaluation": workdir_files.EVALUATION})
        print(f"ensemble of {len(seeds)} members (seeds {', '.join(map(str, seeds))}):", flush=True)
        print(experiment.summarize(result), flush=True)
    return result
