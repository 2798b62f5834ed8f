"""Figures of a run: training curves, schedules, per-run accuracy, wrong trials, and the trials page."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np


def _figure(rows: int, cols: int, width: float, height: float):
    import matplotlib

    matplotlib.use("Agg")  # Files only: no display needed.
    import matplotlib.pyplot as plt

    return plt.subplots(rows, cols, figsize=(width, height), squeeze=False)


def _save(figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def validation_keys(records: list[dict]) -> list[str]:
    """The val_* metrics a run logged, in the order of its first record."""
    return [key for key in records[0] if key.startswith("val_")]


def plot_curves(records: list[dict], path: Path) -> Path:
    """Training loss, and every validation metric the run logged (val_*), against epoch."""
    figure, axes = _figure(1, 2, 11, 4)
    loss_axes, validation_axes = axes[0]
    epochs = [r["epoch"] for r in records]
    loss_axes.plot(epochs, [r["train_loss"] for r in records], marker="o")
    loss_axes.set(xlabel="epoch", ylabel="training loss", title="Training loss")
    for key in validation_keys(records):
        validation_axes.plot(epochs, [100 * r[key] for r in records], marker="o", label=key[len("val_"):])
    validation_axes.set(xlabel="epoch", ylabel="validation (%; AUC x 100)", title="Validation")
    validation_axes.legend()
    for ax in axes[0]:
        ax.grid(alpha=0.3)
    return _save(figure, path)


def plot_schedules(records: list[dict], path: Path) -> Path:
    """Each layer's learning rate and momentum against epoch, as the optimiser applied them."""
    figure, axes = _figure(1, 2, 11, 4)
    epochs = [r["epoch"] for r in records]
    layers = list(records[0]["hyperparameters"])
    for ax, key, label in ((axes[0][0], "learning_rate", "learning rate"), (axes[0][1], "momentum", "momentum")):
        for layer in layers:
            ax.plot(epochs, [r["hyperparameters"][layer][key] for r in records], label=layer)
        ax.set(xlabel="epoch", ylabel=label, title=f"{label.capitalize()} per layer")
        ax.grid(alpha=0.3)
    axes[0][0].set_yscale("log")
    axes[0][1].legend(fontsize=7, ncol=2)
    return _save(figure, path)


def plot_runs(summary: dict, path: Path) -> Path:
    """One-shot accuracy of each official run, with the overall accuracy."""
    figure, axes = _figure(1, 1, 10, 3.5)
    ax = axes[0][0]
    names = list(summary["per_run"])
    ax.bar(names, [100 * summary["per_run"][n]["accuracy"] for n in names])
    ax.axhline(100 * summary["accuracy"], color="black", linestyle="--", label=f"all runs {100 * summary['accuracy']:.2f}%")
    ax.set(ylabel="accuracy (%)", ylim=(0, 100), title="20-way one-shot accuracy per official run")
    ax.tick_params(axis="x", rotation=60)
    ax.legend()
    return _save(figure, path)


def plot_errors(runs, trials, scores: np.ndarray, path: Path, limit: int, per_row: int = 4) -> Path:
    """A grid of wrong trials, `per_row` to a row: query, true match, chosen match, with their probabilities.

    `scores` are log probabilities (scoring.trial_scores); a trial whose answer ties at the top counts
    as wrong, as in the evaluation.
    """
    from siamese_jax.evaluation.scoring import chosen_candidates

    chosen, probabilities = chosen_candidates(scores, trials.answer), np.exp(scores)
    all_wrong = np.flatnonzero(chosen != trials.answer)
    wrong = all_wrong[:limit]
    rows = max(-(-len(wrong) // per_row), 1)
    figure, axes = _figure(rows, 3 * per_row, 2.9 * per_row, max(1.25 * rows + 0.4, 2.2))
    for i, t in enumerate(wrong):
        row, first = divmod(i, per_row)
        run = runs.names[trials.group[t]]
        answer, pick = trials.answer[t], chosen[t]
        panels = ((trials.query[t], f"{run} query"),
                  (trials.support[t, answer, 0], f"true {probabilities[t, answer]:.3f}"),
                  (trials.support[t, pick, 0], f"chosen {probabilities[t, pick]:.3f}"))
        for k, (image, title) in enumerate(panels):
            ax = axes[row][3 * first + k]
            ax.imshow(~runs.images[image], cmap="gray", vmin=0, vmax=1)
            ax.set_title(title, fontsize=7, color="#c62828" if k == 2 else "black")
    for ax in axes.ravel():
        ax.axis("off")
    shown = f"{len(wrong)} of {len(all_wrong)}" if len(wrong) else "no"
    figure.suptitle(f"Wrong trials ({shown}): query, its true match, the model's choice", fontsize=9)
    return _save(figure, path)


def _png_data_uri(ink: np.ndarray) -> str:
    """A bool image (True = ink) as a black-on-white PNG data URI."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(~ink).convert("1").save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def page_data(runs, trials, scores: np.ndarray) -> dict:
    """Everything the page shows, as JSON-ready values: images once, trials as indices into them.

    `scores` are log probabilities; the page shows probabilities.
    """
    from siamese_jax.evaluation.scoring import chosen_candidates

    chosen, probabilities = chosen_candidates(scores, trials.answer), np.exp(scores)
    return {
        "images": [_png_data_uri(image) for image in runs.images],
        "runs": list(runs.names),
        "trials": [
            {"run": int(trials.group[t]), "query": int(trials.query[t]),
             "candidates": [int(i) for i in trials.support[t, :, 0]],
             "scores": [round(float(p), 4) for p in probabilities[t]],
             "answer": int(trials.answer[t]), "chosen": int(chosen[t])}
            for t in range(len(trials.query))
        ],
    }


def write_page(data: dict, title: str, path: Path) -> Path:
    """The self-contained trials page: data, style and script inline, no network requests."""
    template = (Path(__file__).parent / "report_page.html").read_text()
    # '</' inside JSON would end the script element early.
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    path.write_text(template.replace("__TITLE__", html.escape(title)).replace("__DATA__", payload))
    return path
