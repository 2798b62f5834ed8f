"""Devices and processes: joining a multi-process run, the data-parallel mesh, and global arrays.

Training is data parallel with `jax.jit` over a one-axis mesh: parameters and optimiser state are
replicated, the batch is split over the "data" axis, and XLA inserts the gradient all-reduce.
"""

from __future__ import annotations

import collections
import os
import sys
import threading
import zlib
from typing import Iterable, Iterator, NoReturn

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from siamese_jax.errors import ConfigError, UserError

DATA_AXIS = "data"


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, auto: bool = False, timeout_s: int = 300,
               local_device_ids: list[int] | None = None) -> None:
    """Joins a multi-process run (explicit coordinator, or auto-detected on TPU pods and Slurm).

    `local_device_ids` are the accelerators this process drives; by default JAX chooses, which under
    Slurm is one GPU a task (SLURM_LOCALID), so a process per node must name all of its GPUs.
    Does nothing for a single process. Must run before anything touches a device.
    """
    explicit = (coordinator_address, num_processes, process_id)
    if all(value is None for value in explicit) and not auto:
        return
    if any(value is not None for value in explicit):
        if any(value is None for value in explicit):
            raise ConfigError("--coordinator_address, --num_processes and --process_id go together: give all three")
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise ConfigError(f"--process_id={process_id} must lie in [0, --num_processes={num_processes})")
    if local_device_ids is not None and (not local_device_ids or any(i < 0 for i in local_device_ids)):
        raise ConfigError(f"--local_device_ids must be device numbers >= 0, got {local_device_ids}")
    if timeout_s < 1:
        raise ConfigError(f"--distributed_timeout must be a positive number of seconds, got {timeout_s}")
    where = coordinator_address or "the auto-detected coordinator"
    # XLA aborts the whole process with a C++ stack trace when the run does not form in time;
    # this watchdog ends it first, with a message that says what to check.
    watchdog = threading.Timer(timeout_s, leave_now, args=(
        f"error: the multi-process run did not form within {timeout_s}s: process "
        f"{'?' if process_id is None else process_id} could not meet all "
        f"{'the' if num_processes is None else num_processes} processes at {where}. Start every "
        "process with the same --coordinator_address (host:port of process 0, reachable from all "
        "hosts) and --num_processes, each with its own --process_id; raise --distributed_timeout "
        "if the hosts start slowly",
    ))
    watchdog.daemon = True
    watchdog.start()
    try:
        jax.distributed.initialize(coordinator_address, num_processes, process_id, local_device_ids=local_device_ids,
                                   initialization_timeout=timeout_s + 30)
    except (RuntimeError, ValueError) as error:
        raise UserError(f"cannot join the multi-process run at {where}: {error}") from None
    finally:
        watchdog.cancel()
    if num_processes is not None and jax.process_count() != num_processes:
        # Not an exception: a normal exit would wait at JAX's shutdown barrier for peers that
        # are waiting for this process in turn.
        leave_now(
            f"error: this process was started with --num_processes={num_processes} but the run at {where} "
            f"has {jax.process_count()} processes: give every process the same --num_processes"
        )


def leave_now(message: str) -> NoReturn:
    """Ends this process at once with `message` on stderr and exit code 1, past JAX's shutdown barrier.

    That barrier waits for every peer, so a process that fails alone would hold its peers until the
    heartbeat timeout (100 s) and then abort with a C++ stack; leaving at once, it closes its connections,
    and a peer's next collective fails (lost_peer). Checkpoints are written synchronously: nothing saved is lost.
    """
    sys.stdout.flush()
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
    os._exit(1)


# How a collective reports a peer process that is gone: Gloo (CPUs), NCCL (GPUs), JAX's coordination service.
_PEER_GONE = ("connection closed by peer", "connection reset by peer", "broken pipe", "heartbeat timeout",
              "nccl", "gloo", "coordination service")


def lost_peer(error: BaseException) -> str | None:
    """One line for an error by which a multi-process run says that another of its processes is gone; None
    for any other error, or in a single-process run."""
    text = str(error)
    if not jax.distributed.is_initialized() or not any(word in text.lower() for word in _PEER_GONE):
        return None
    first = " ".join(text.split())[:200]
    return (f"error: process {jax.process_index()} of {jax.process_count()} lost another process of the run "
            f"({first}): it most likely died, and its log says why. Every process stops; the same command "
            "resumes from the last checkpoint")


def preempted_at(call: int) -> bool:
    """Whether a multi-process run stops at this `call` because some process got SIGTERM: JAX's preemption
    notifier takes the signal and agrees with every process on one call. Every process must call it with
    the same numbers, one up each time: the agreed one is the fastest process's last number + 1, so numbers
    that skip (training steps with steps_per_dispatch > 1) would never reach it."""
    from jax.experimental import multihost_utils

    return bool(multihost_utils.reached_preemption_sync_point(call))


def is_primary() -> bool:
    """True on the one process that logs, writes metrics and reports (process 0)."""
    return jax.process_index() == 0


def on_every_process(flag: bool) -> bool:
    """Whether `flag` holds on every process: one decision that all processes then follow (the flag itself
    in a single-process run). Every process must call it."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(np.all(multihost_utils.process_allgather(np.array([flag], np.int32))))


def worst_everywhere(value: int) -> int:
    """The largest of every process's `value` (the value itself in a single-process run). Every process must
    call it."""
    if jax.process_count() == 1:
        return int(value)
    from jax.experimental import multihost_utils

    return int(np.max(multihost_utils.process_allgather(np.array([value], np.int32))))


def from_primary(values: list[int]) -> list[int]:
    """Process 0's `values` (ints) on every process. Every process must call it."""
    if jax.process_count() == 1:
        return list(values)
    from jax.experimental import multihost_utils

    count = int(multihost_utils.broadcast_one_to_all(np.int32(len(values))))
    padded = np.zeros(count, np.int64)
    padded[:min(count, len(values))] = values[:count]
    return [int(v) for v in multihost_utils.broadcast_one_to_all(padded)]


def require_same_everywhere(arrays, what: str) -> None:
    """Raises UserError on every process unless every process holds the same `arrays` (compared by shape and
    CRC-32; computed only in a multi-process run) of `what`. Every process must call it."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    mine = np.asarray([v for array in arrays
                       for v in (*np.shape(array), zlib.crc32(np.ascontiguousarray(array)) & 0x7FFFFFFF)], np.int32)
    everyone = np.asarray(multihost_utils.process_allgather(mine)).reshape(jax.process_count(), -1)
    differ = [i for i, theirs in enumerate(everyone) if not np.array_equal(theirs, everyone[0])]
    if differ:
        raise UserError(f"processes {differ} read other {what} than process 0: give every process the same "
                        "config and data folder (on a file system all hosts see, or identical copies)")


def data_mesh(devices=None) -> Mesh:
    """A one-axis mesh over `devices` (default: every device of every process)."""
    return Mesh(np.asarray(jax.devices() if devices is None else devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """The leading (batch) axis is split over the mesh's data axis."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def put(tree, sharding: NamedSharding):
    """Places host values, identical on every process, as global arrays of `sharding`.

    Arrays already laid out that way are returned as they are. Works with several processes,
    where each process only fills the shards of its own devices.
    """

    def place(value):
        if isinstance(value, jax.Array) and value.sharding.is_equivalent_to(sharding, value.ndim):
            # Equivalent is not identical: a jitted function given a SingleDeviceSharding where its
            # previous call had a one-device NamedSharding compiles again (twice per 1-GPU run).
            return value if value.sharding == sharding or not value.is_fully_addressable else jax.device_put(
                value, sharding)
        host = np.asarray(value)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(place, tree)


# XLA:CPU launches each device's part of a program on one pool of max(cores, devices) threads.
# With dozens of multi-device programs queued, parts waiting for a launch slot hold the threads
# a collective's last participant needs, and the process deadlocks (docs/clusters.md says when).
# Loops that dispatch many programs wait for the one dispatched MAX_IN_FLIGHT earlier; a few in
# flight keep an accelerator just as busy.
MAX_IN_FLIGHT = 8


class InFlight:
    """Bounds how many dispatched device computations may run ahead of the host."""

    def __init__(self, limit: int = MAX_IN_FLIGHT):
        self.limit = limit
        self.window = collections.deque()

    def add(self, result):
        """Records a just-dispatched result (any pytree of arrays), waiting for the oldest beyond the limit."""
        self.window.append(result)
        if len(self.window) > self.limit:
            jax.block_until_ready(self.window.popleft())
        return result


def paced(results: Iterable, limit: int = MAX_IN_FLIGHT) -> Iterator:
    """Yields lazily dispatched device results, never letting more than `limit` run ahead."""
    in_flight = InFlight(limit)
    return (in_flight.add(result) for result in results)
