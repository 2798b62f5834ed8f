"""Ensembles: runs of one config that differ in their seed, scored as one model (models.SiameseEnsemble).

    python -m siamese_jax.train --config=configs/omniglot_cpu_ensemble.py --workdir=DIR

A config with `ensemble_seeds` trains one member per seed, each a run of its own in DIR/seed_S (resumable like
any run; a member that finished at its config's length is kept; each has an equal share of
config.max_train_seconds), then evaluates the members as one model into DIR/eval.json: a pair's same-class
probability is the mean of the members'. evaluate, predict, report and the demo take DIR as any
workdir (workdir.restore_model).
"""

from __future__ import annotations

from typing import Callable

from siamese_jax import distributed, experiments, models
from siamese_jax import workdir as workdir_files
from siamese_jax.errors import ConfigError
from siamese_jax.provenance import provenance


def check_seeds(seeds) -> tuple[int, ...]:
    """config.ensemble_seeds as a tuple of distinct integers, two or more; one line for anything else."""
    integers = isinstance(seeds, (tuple, list)) and all(isinstance(seed, int) and not isinstance(seed, bool)
                                                        for seed in seeds)
    if not integers or len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise ConfigError(f"config.ensemble_seeds must be two or more distinct integer seeds (or () for one run), "
                          f"got {seeds!r}")
    return tuple(seeds)


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
    with member.ignore_type():  # A config file may have written the limit as an int; the share is a float.
        member.max_train_seconds = float(config.max_train_seconds) / len(config.ensemble_seeds)
    return member


def training_record(members: list[tuple[int, str, dict]]) -> dict:
    """The ensemble's training record from its members' (seed, workdir, training record): their epochs, steps,
    pairs and seconds summed, and each member's own."""
    summed = {key: sum(record[key] for _, _, record in members) for key in ("epochs", "steps", "pairs", "wall_time_s")}
    return {**summed, "stopped_by": "members",
            "members": [{"seed": seed, "workdir": workdir, **record} for seed, workdir, record in members]}


def finished_as_configured(member_dir: str, member) -> dict | None:
    """A member's finished record (workdir.finished) if it ended under this member config's length (num_epochs,
    patience, max_train_seconds: workdir.LENGTH_KEYS); None if it has to train, or train on."""
    done = workdir_files.finished(member_dir)
    saved = workdir_files.saved_config(member_dir)
    if not done or saved is None:
        return None
    same_length = all(saved.get(key) == member[key] for key in workdir_files.LENGTH_KEYS)
    return done if same_length else None


def train_and_evaluate(config, workdir: str, train_member: Callable[[object, str], dict], devices=None,
                       allow_config_change: bool = False) -> dict:
    """Trains each member of config.ensemble_seeds in turn with `train_member(config, workdir)` (one that finished
    under its member config's length is kept; if one trained under another recipe, nothing starts unless
    `allow_config_change`, as for any resume), then evaluates the ensemble on `devices` (default: all) into
    WORKDIR/eval.json and prints its summary. The ensemble's workdir is locked throughout."""
    seeds = check_config(config)
    workdir_files.prepare(workdir, config, allow_config_change)  # Writable, and not a single run's workdir.
    lock = workdir_files.lock_for_training(workdir)
    try:
        primary = distributed.is_primary()
        planned = []
        for seed, member_dir in zip(seeds, workdir_files.member_workdirs(workdir, seeds)):
            member = member_config(config, seed)
            # Every member checked before anything is written: one of another recipe is refused, as any resume.
            workdir_files.prepare(member_dir, member, allow_config_change)
            done = finished_as_configured(member_dir, member)
            # Every process trains a member, or none does: a member is one run of every process.
            planned.append((seed, member_dir, member, done if distributed.on_every_process(done is not None) else None))
        if primary:
            workdir_files.record_config(workdir, config, after_epoch=0)
            workdir_files.clear_finished(workdir)
        members = []
        for number, (seed, member_dir, member, done) in enumerate(planned, 1):
            if primary:
                print(f"ensemble member {number} of {len(seeds)} (seed {seed}, {member_dir}): "
                      + ("finished earlier, kept" if done else "training"), flush=True)
            record = done["training"] if done else train_member(member, member_dir)["training"]
            members.append((seed, member_dir, record))
        mesh = distributed.data_mesh(devices)
        experiment = experiments.build(config)
        model, variables = workdir_files.restore_model(workdir, config, "best", mesh)
        result = {"checkpoint": "best", **experiment.evaluate(model, variables, mesh),
                  "training": training_record(members), "provenance": provenance(mesh.size)}
        if primary:
            workdir_files.write_json(result, workdir_files.evaluation_path(workdir))
            workdir_files.mark_finished(workdir, {"training": result["training"],
                                                  "evaluation": workdir_files.EVALUATION})
            print(f"ensemble of {len(seeds)} members (seeds {', '.join(map(str, seeds))}):", flush=True)
            print(experiment.summarize(result), flush=True)
        return result
    finally:
        lock.release()
