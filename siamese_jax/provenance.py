"""Where a result came from: command, commit, device and date, recorded beside every number."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import jax

from siamese_jax import xla_flags


def device_description(num_devices: int | None = None) -> str:
    """The devices used (default: all) and the host's processor, e.g. 'cpu:cpu x1; host AMD EPYC, 2 cores'."""
    device = jax.devices()[0]
    count = jax.device_count() if num_devices is None else num_devices
    processes = f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""
    return f"{device.platform}:{device.device_kind} x{count}{processes}; host {host_processor()}, {os.cpu_count()} cores"


def host_processor() -> str:
    """The host's processor model, e.g. 'AMD EPYC' (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def git_commit() -> str | None:
    """The checkout's HEAD commit (with '+dirty' for uncommitted changes), or None outside git."""
    repo = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")


def provenance(num_devices: int | None = None) -> dict:
    """The record stored with every result; `num_devices` used (default: all)."""
    return {
        "command": command_line(),
        "commit": git_commit(),
        "device": device_description(num_devices),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "jax_version": jax.__version__,
        **xla_flags.describe(),
    }


def command_line() -> str:
    """The command as typed: 'python -m module args' or 'python path/to/script.py args'."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name != "__main__":
        return shlex.join(["python", "-m", spec.name, *sys.argv[1:]])
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(Path.cwd())
    except ValueError:
        pass
    return shlex.join(["python", str(script), *sys.argv[1:]])
