"""Data parallelism with `jax.sharding`: one code path from one CPU to a pod.

A 1-D mesh with the axis 'data' spans the devices. The global batch is split
along 'data' (each device holds batch_size / num_devices examples); the
parameters, optimizer state and BatchNorm statistics are replicated. `jax.jit`
partitions the step: XLA inserts the all-reduce of the gradients (and of the
BatchNorm batch statistics, which are then those of the global batch). With
several processes (multi-host), `jax.distributed.initialize()` joins them,
the mesh spans every process's devices, and each process feeds its own rows
of the global batch (`host_batch_to_global`).

This is the modern form of `pmap`: the same program, no per-device axis in
user code, and a single device is just a mesh of size one.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from cnnjax.errors import CnnjaxError

DATA_AXIS = "data"


def initialize_distributed() -> None:
  """Joins the processes of a multi-host job (once; a no-op when joined).

  `jax.distributed.initialize()` finds the coordinator itself on Cloud TPU,
  SLURM and Open MPI; elsewhere set JAX_COORDINATOR_ADDRESS (host:port of
  process 0), JAX_NUM_PROCESSES and JAX_PROCESS_ID in every process.
  """
  if jax.distributed.is_initialized():
    return
  kwargs = {}
  for key, name in (("num_processes", "JAX_NUM_PROCESSES"),
                    ("process_id", "JAX_PROCESS_ID")):
    if os.environ.get(name):
      kwargs[key] = int(os.environ[name])
  # CPU processes exchange data through Gloo (GPUs and TPUs have their own).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(**kwargs)
  except (RuntimeError, ValueError) as e:
    raise CnnjaxError(
        "config.parallel.distributed is set but jax.distributed.initialize() "
        f"failed ({str(e).splitlines()[0]}); set JAX_COORDINATOR_ADDRESS, "
        "JAX_NUM_PROCESSES and JAX_PROCESS_ID, or run under SLURM/MPI/TPU") from e


def is_primary() -> bool:
  """Process 0 writes the run's files (every process writes checkpoints)."""
  return jax.process_index() == 0


@dataclasses.dataclass(frozen=True)
class DataParallel:
  """The mesh and the shardings of a data-parallel run."""
  mesh: Mesh

  @property
  def num_devices(self) -> int:
    return self.mesh.devices.size

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  @property
  def batch(self) -> NamedSharding:
    """Leading (example) axis split over the devices."""
    return NamedSharding(self.mesh, P(DATA_AXIS))

  @property
  def stacked_batches(self) -> NamedSharding:
    """(num_batches, B, ...): each batch split over the devices."""
    return NamedSharding(self.mesh, P(None, DATA_AXIS))

  @property
  def num_local_devices(self) -> int:
    return sum(d.process_index == jax.process_index()
               for d in self.mesh.devices.flat)

  def check_batch_size(self, batch_size: int, what: str = "config.batch_size") -> None:
    if batch_size % self.num_devices:
      raise CnnjaxError(
          f"{what} ({batch_size}) must be a multiple of the number of devices "
          f"({self.num_devices}); change it or set config.parallel.num_devices")

  def round_up(self, batch_size: int) -> int:
    """The smallest multiple of the device count >= batch_size (eval batches)."""
    n = self.num_devices
    return -(-batch_size // n) * n

  def put_replicated(self, tree: Any) -> Any:
    """Copies a pytree (host or device arrays) onto every device."""
    return self._put(tree, self.replicated)

  def put_batch(self, tree: Any, sharding: NamedSharding | None = None) -> Any:
    """A batch that every process holds in full, split over the devices."""
    return self._put(tree, sharding or self.batch)

  def _put(self, tree, sharding):
    if jax.process_count() == 1:
      return jax.device_put(tree, sharding)

    # Several processes: each builds the shards of its own devices from its
    # (identical) host copy.
    def put(x):
      x = np.asarray(x)
      return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])
    return jax.tree.map(put, tree)

  def host_batch_to_global(self, tree: Any) -> Any:
    """This process's rows of the global batch -> global arrays.

    With one process the rows are the whole batch. With several, process p
    holds rows [p * b, (p + 1) * b) of the global batch (b = global / count).
    """
    if jax.process_count() == 1:
      return jax.device_put(tree, self.batch)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(self.batch, np.asarray(x)),
        tree)


def make_data_parallel(num_devices: int = 0) -> DataParallel:
  """A 1-D 'data' mesh over the first `num_devices` devices (0: all)."""
  devices = jax.devices()
  if num_devices:
    if num_devices > len(devices):
      raise CnnjaxError(
          f"config.parallel.num_devices is {num_devices} but only "
          f"{len(devices)} {devices[0].platform} device(s) are visible")
    if jax.process_count() > 1 and num_devices != len(devices):
      raise CnnjaxError("config.parallel.num_devices must be 0 (all) in a "
                        "multi-host run")
    devices = devices[:num_devices]
  return DataParallel(Mesh(np.asarray(devices), (DATA_AXIS,)))
