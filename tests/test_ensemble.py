"""Ensembles: members trained from one config and scored as one model (siamese_jax.ensemble, models.SiameseEnsemble)."""

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from siamese_jax import ensemble, evaluate, models, predict, train
from siamese_jax import workdir as workdir_files
from siamese_jax.data.omniglot import load_runs, locate_runs
from siamese_jax.errors import ConfigError, DataError
from siamese_jax.experiments import build
from tests.conftest import load_config, metrics, tiny_config


def test_an_ensemble_scores_the_mean_of_its_members_probabilities():
    model = models.build_model(load_config("omniglot_cpu").model)
    shape = (28, 28)
    member_variables = [models.init_variables(model, jax.random.PRNGKey(seed), shape) for seed in range(3)]
    # One module object for every member: `of` must still give each its own parameters.
    joint = models.SiameseEnsemble.of([model] * 3)
    variables = models.ensemble_variables(member_variables)
    images = jax.random.uniform(jax.random.PRNGKey(7), (5, *shape))
    embeddings = joint.apply(variables, images, method="embed")
    own = [model.apply(v, images, method="embed") for v in member_variables]
    np.testing.assert_array_equal(embeddings, np.concatenate(own, axis=-1))
    logits = joint.apply(variables, embeddings[:, None], embeddings[None], method="score")
    probabilities = np.mean([jax.nn.sigmoid(model.apply(v, h[:, None], h[None], method="score"))
                             for v, h in zip(member_variables, own)], axis=0)
    assert logits.shape == (5, 5) and np.ptp(probabilities) > 1e-3
    np.testing.assert_allclose(jax.nn.sigmoid(logits), probabilities, atol=1e-6)
    # Views of one image (test crops) average each member's embeddings, as each member alone would.
    from siamese_jax.evaluation import scoring

    views = (np.random.default_rng(0).uniform(size=(4, 2, *shape)) * 255).astype(np.uint8)
    np.testing.assert_allclose(scoring.encode_views(joint, variables, views, 4),
                               np.concatenate([scoring.encode_views(model, v, views, 4) for v in member_variables], -1),
                               rtol=1e-5, atol=1e-6)


def test_ensembles_refuse_unit_length_members_and_bad_seeds():
    faces = load_config("lfw_cpu")
    faces.ensemble_seeds = (0, 1)
    with pytest.raises(ConfigError, match="sigmoid"):
        train.validate_config(faces, num_devices=1)  # Before any member trains.
    for seeds in [(0,), (1, 1), (0, 1.5), (0, True), 3, ([0], [1])]:
        with pytest.raises(ConfigError, match="ensemble_seeds"):
            ensemble.check_seeds(seeds)
    assert ensemble.check_seeds([3, 1]) == (3, 1)


def test_members_share_the_ensembles_time_limit():
    import ml_collections

    config = load_config("omniglot_cpu_ensemble")
    config.max_train_seconds = 600.0
    member = ensemble.member_config(config, 2)
    assert (member.seed, tuple(member.ensemble_seeds), member.max_train_seconds) == (2, (), 200.0)
    assert member.model == config.model and config.seed == 0  # The ensemble's own config is left alone.
    written_as_int = ml_collections.ConfigDict({**config.to_dict(), "max_train_seconds": 2})
    assert ensemble.member_config(written_as_int, 1).max_train_seconds == pytest.approx(2 / 3)  # Not 0: no limit.


def test_an_ensemble_config_trains_only_as_an_ensemble(synthetic_data_dir, cache_dir, tmp_path):
    from siamese_jax import tune

    config = tiny_config(synthetic_data_dir, cache_dir, ensemble_seeds=(0, 1))
    with pytest.raises(ConfigError, match="trains an ensemble"):
        train.Trainer(config, str(tmp_path / "one"))
    config.tune = load_config("omniglot_cpu").tune
    with pytest.raises(ConfigError, match="a tuning study trains single runs"):
        tune.Search(config, str(tmp_path / "study"), f"sqlite:///{tmp_path}/study.db", 2, "tiny.py")
    assert not (tmp_path / "study").exists() and not (tmp_path / "study.db").exists()
    # A mistake in the ensemble's config stops it before its workdir is touched, in the user's own values.
    config.max_train_seconds = -600.0
    with pytest.raises(ConfigError, match="-600"):
        train.train_and_evaluate(config, str(tmp_path / "ensemble"))
    assert not (tmp_path / "ensemble").exists()


@pytest.fixture(scope="module")
def trained_ensemble(trained_omniglot, synthetic_data_dir, cache_dir, tmp_path_factory):
    """A two-member ensemble whose seed-0 member is the session's tiny run (finished earlier, so kept) and whose
    seed-1 member trains here: (its config, workdir, result, the tiny run's result)."""
    member_config, member_workdir, member_result = trained_omniglot
    assert member_config.seed == 0
    workdir = tmp_path_factory.mktemp("ensemble")
    shutil.copytree(member_workdir, workdir / "seed_0")
    config = tiny_config(synthetic_data_dir, cache_dir, ensemble_seeds=(0, 1))
    return config, workdir, train.train_and_evaluate(config, str(workdir)), member_result


@pytest.mark.slow  # Trains the tiny ensemble.
def test_an_ensemble_trains_its_missing_members_then_evaluates_them_as_one(trained_ensemble, capsys):
    config, workdir, result, first = trained_ensemble
    seed_0, seed_1 = workdir_files.member_workdirs(str(workdir), (0, 1))
    assert workdir_files.load_config(seed_1).seed == 1 and not workdir_files.load_config(seed_1).ensemble_seeds
    members = result["training"]["members"]
    assert [m["seed"] for m in members] == [0, 1]
    assert {k: v for k, v in members[0].items() if k not in ("seed", "workdir")} == first["training"]  # Kept.
    assert result["training"]["wall_time_s"] == pytest.approx(sum(m["wall_time_s"] for m in members))
    assert json.loads((workdir / "eval.json").read_text())["runs"] == result["runs"]
    assert workdir_files.finished(str(workdir))["training"] == result["training"]

    # The ensemble's trial scores are the log of the mean of its members' probabilities; under the four test-time
    # turns the shipped CPU configs score with, of the mean over members and turns.
    experiment = build(config)
    runs = load_runs(locate_runs(str(config.data_dir)))
    for turns in (1, 4):
        turned = {"test_time_turns": turns}
        scores = [experiment.runs_scores(*workdir_files.restore_model(w, workdir_files.load_config(w, turned), "best"),
                                         runs) for w in (seed_0, seed_1)]
        joint_config = workdir_files.load_config(str(workdir), turned)
        model, variables = workdir_files.restore_model(str(workdir), joint_config, "best")
        assert model.test_time_turns == turns
        joint = experiment.runs_scores(model, variables, runs)
        assert not np.allclose(scores[0], scores[1])
        np.testing.assert_allclose(np.exp(joint), np.mean(np.exp(scores), axis=0), atol=1e-5)

    # Evaluate and predict take the ensemble's workdir as any workdir.
    again, summary = evaluate.evaluate_workdir(str(workdir))
    assert again["runs"] == result["runs"] and "official runs" in summary
    predictor = predict.Predictor(str(workdir))
    assert isinstance(predictor.model, models.SiameseEnsemble)
    images = experiment.prepare(runs.images[:3])
    logits = predictor.pair_logits(images, np.array([0, 0]), np.array([1, 2]))
    ranking = predictor.rank(*(lambda e: (e[..., 0, :], e[..., 1:, :]))(predictor.embed(images)), ["b", "c"], [1, 1])
    assert [r["class"] for r in ranking] == (["b", "c"] if logits[0] > logits[1] else ["c", "b"])

    # Run again, every member is finished: none trains, and the evaluation is the same.
    capsys.readouterr()
    rerun = train.train_and_evaluate(config, str(workdir))
    out = capsys.readouterr().out
    assert out.count("finished earlier, kept") == 2 and "epoch" not in out.split("ensemble of")[0]
    assert rerun["runs"] == result["runs"] and rerun["training"] == result["training"]


@pytest.mark.slow  # Trains the tiny ensemble.
def test_the_report_of_an_ensemble_shows_its_trials(trained_ensemble, tmp_path):
    from siamese_jax import report

    _, workdir, _, _ = trained_ensemble
    written = report.write_report(str(workdir), str(tmp_path / "report"))
    assert sorted(path.name for path in written) == ["errors.png", "official_runs.png", "trials.html"]


@pytest.mark.slow  # Trains the tiny ensemble.
def test_a_longer_ensemble_trains_its_finished_members_on(trained_ensemble, tmp_path):
    config, workdir, _, _ = trained_ensemble
    longer_dir = tmp_path / "ensemble"
    shutil.copytree(workdir, longer_dir)
    longer = config.copy_and_resolve_references()
    longer.num_epochs = 3
    result = train.train_and_evaluate(longer, str(longer_dir))
    assert [m["epochs"] for m in result["training"]["members"]] == [3, 3]
    for member in workdir_files.member_workdirs(str(longer_dir), (0, 1)):
        assert [r["epoch"] for r in metrics(Path(member))] == [1, 2, 3]


@pytest.mark.slow  # Trains the tiny ensemble.
def test_a_member_of_another_recipe_stops_the_ensemble_before_anything_is_written(trained_ensemble, tmp_path):
    from siamese_jax.errors import UserError

    config, workdir, _, _ = trained_ensemble
    changed = tmp_path / "ensemble"
    shutil.copytree(workdir, changed)
    before = (changed / "config.json").read_text()
    config = config.copy_and_resolve_references()
    config.learning_rate *= 2
    with pytest.raises(UserError, match="learning_rate"):
        train.train_and_evaluate(config, str(changed))
    assert (changed / "config.json").read_text() == before and (changed / "finished.json").exists()


@pytest.mark.slow  # Trains the tiny ensemble.
def test_an_ensemble_and_a_single_run_never_share_a_workdir(trained_ensemble, trained_omniglot, tmp_path):
    from siamese_jax.errors import UserError

    config, workdir, _, _ = trained_ensemble
    single_config, single, _ = trained_omniglot
    with pytest.raises(UserError, match="holds a single run"):
        train.train_and_evaluate(config, str(single))
    with pytest.raises(UserError, match="holds an ensemble's members"):
        train.train_and_evaluate(single_config, str(workdir))


@pytest.mark.slow  # Trains the tiny ensemble.
def test_members_must_share_their_input_and_be_trained(trained_ensemble, tmp_path):
    config, workdir, _, _ = trained_ensemble
    odd = tmp_path / "ensemble"
    shutil.copytree(workdir, odd)
    saved = json.loads((odd / "seed_1" / "config.json").read_text())
    saved["channels"] = 3
    (odd / "seed_1" / "config.json").write_text(json.dumps(saved))
    with pytest.raises(DataError, match=r"seed_1 cannot join .*channels: 1 -> 3"):
        workdir_files.restore_model(str(odd), config, "best")
    shutil.rmtree(odd / "seed_1")
    with pytest.raises(DataError, match="seed_1 has not trained yet"):
        workdir_files.restore_model(str(odd), config, "best")


@pytest.mark.slow  # Trains the tiny ensemble.
def test_an_ensemble_is_packed_one_member_at_a_time(trained_ensemble, tmp_path):
    from siamese_jax import pretrained
    from siamese_jax.errors import UserError

    _, workdir, _, _ = trained_ensemble
    with pytest.raises(UserError, match="pack one of its members"):
        pretrained.pack(str(workdir), str(tmp_path / "packed"))
    assert "official runs" in pretrained.pack(str(workdir / "seed_1"), str(tmp_path / "member"))
