"""What training tells its user while it runs: where it runs, the measured speed with an estimate of the
time left, and each epoch's validation scores."""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from tqdm import tqdm


def describe_mesh(mesh: Mesh, images_per_step: int, compute_dtype) -> str:
    """One line naming where training runs, e.g. 'data parallel over 8 cpu devices, 32 of 256 images each'."""
    device = mesh.devices.flat[0]
    where = f"{mesh.size} {device.platform} device{'s' if mesh.size > 1 else ''} ({device.device_kind})"
    split = (f"data parallel over {where}, {images_per_step // mesh.size} of {images_per_step} images each"
             if mesh.size > 1 else f"training on {where}, {images_per_step} images per step")
    return f"{split}, {jnp.dtype(compute_dtype).name} compute"


class SpeedReport:
    """Times the first steps after compilation and says once how long the whole run will take.

    On a CPU the paper's network takes weeks: the line says so at once and points to the CPU
    config and the GPU instructions, instead of leaving a user to find out from the progress bar.
    """

    SLOW_S = 6 * 3600  # Above this, on a CPU, the line suggests the alternatives.
    MIN_STEPS, MIN_SECONDS = 20, 30.0

    def __init__(self, platform: str, pairs_per_step: int, enabled: bool):
        self.platform = platform
        self.pairs_per_step = pairs_per_step
        self.pending = enabled
        self.start: tuple[float, int] | None = None

    def after_step(self, loss, step: int, last_step: int) -> str | None:
        """Call after each dispatch; returns the line to print once enough steps were timed."""
        if not self.pending or step >= last_step:
            return None
        if self.start is None:  # The first step compiles: time from its end.
            jax.block_until_ready(loss)
            self.start = (time.time(), step)
            return None
        seconds, steps = time.time() - self.start[0], step - self.start[1]
        if steps < self.MIN_STEPS and seconds < self.MIN_SECONDS:
            return None
        jax.block_until_ready(loss)  # Once: the queued steps must finish for an honest rate.
        self.pending = False
        seconds = time.time() - self.start[0]
        rate = steps * self.pairs_per_step / seconds
        remaining = (last_step - step) * self.pairs_per_step / rate
        line = f"measured {rate:,.1f} pairs/s: the remaining {last_step - step:,} steps take about {duration(remaining)}"
        if self.platform == "cpu" and remaining > self.SLOW_S:
            line += (". This config is meant for a GPU: configs/omniglot_cpu.py trains a smaller network on "
                     "a CPU in about 20 minutes, and BUILD.md shows how to install JAX for GPUs. Training "
                     "goes on; Ctrl-C saves and stops, and the same command resumes")
        return line


class TrainingProgress:
    """A training's progress bar in pairs, the SpeedReport line once measured, and the loss at each log point.

    Refreshed every second on a terminal and every 30 s in a log file; nothing is shown when not `enabled`
    (processes other than 0).
    """

    def __init__(self, step: int, total_steps: int, pairs_per_step: int, enabled: bool):
        self.total_steps, self.pairs_per_step = total_steps, pairs_per_step
        self.bar = tqdm(total=total_steps * pairs_per_step, initial=step * pairs_per_step, unit="pair",
                        unit_scale=True, dynamic_ncols=True, mininterval=1.0 if sys.stderr.isatty() else 30.0,
                        smoothing=0.1, disable=not enabled)
        self.speed = SpeedReport(jax.default_backend(), pairs_per_step, enabled=enabled and step < total_steps)

    def advance(self, loss: jax.Array, step: int, steps: int) -> None:
        """Counts `steps` more steps, up to step `step` whose loss is `loss` (still on the device)."""
        self.bar.update(steps * self.pairs_per_step)
        line = self.speed.after_step(loss, step, self.total_steps)
        if line:
            self.bar.write(line)

    def show(self, epoch: int, loss: float) -> None:
        """Shows the epoch and a loss beside the bar, at its next refresh."""
        self.bar.set_postfix(epoch=epoch, loss=f"{loss:.4f}", refresh=False)

    def write(self, line: str) -> None:
        """Prints a line above the bar (to stdout, as tqdm.write does), unless disabled."""
        if not self.bar.disable:
            self.bar.write(line)

    def close(self) -> None:
        """Closes the bar; again is a no-op."""
        self.bar.close()


def duration(seconds: float) -> str:
    """A rough human duration: '40 s', '12 min', '3.5 h', '21 days'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def format_scores(scores: dict[str, float]) -> str:
    """Validation metrics for the epoch line: accuracies in percent, other scores as they are."""
    return ", ".join(f"{name} {100 * value:.1f}%" if name.endswith("accuracy") else f"{name} {value:.3f}"
                     for name, value in scores.items())
