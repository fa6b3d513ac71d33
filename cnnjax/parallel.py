"""Data parallelism with `jax.sharding`: one code path from one CPU to a pod.

A 1-D mesh with the axis 'data' spans the devices. The global batch is split
along 'data' (each device holds batch_size / num_devices examples); the
parameters, optimizer state and BatchNorm statistics are replicated. `jax.jit`
partitions the step: XLA inserts the all-reduce of the gradients (and of the
BatchNorm batch statistics, which are then those of the global batch). With
several processes (multi-host), `jax.distributed.initialize()` joins them,
the mesh spans every process's devices, and each process feeds its own rows
of the global batch (`host_batch_to_global`). `cluster_environment()` reads
the job's layout (SLURM, Cloud TPU, Open MPI, JAX_* variables) from the
environment, so that a layout that cannot work is one sentence before JAX
starts; `max_over_processes` is how the processes agree on a stop signal.

This is the modern form of `pmap`: the same program, no per-device axis in
user code, and a single device is just a mesh of size one.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from typing import Any, Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from cnnjax.errors import CnnjaxError

DATA_AXIS = "data"


# Where JAX looks for a job's layout, in the order JAX's own cluster detection
# (jax/_src/clusters/) tries them; explicit JAX_* variables override.
SCHEDULERS = {"ompi": "Open MPI", "slurm": "SLURM", "tpu": "Cloud TPU",
              "jax": "JAX_* variables", "none": "no cluster variables"}
# JAX's coordinator ports: SLURM and Open MPI derive one from the job id in
# [61440, 65535]; Cloud TPU uses a fixed one. JAX_COORDINATOR_PORT overrides.
_PORT_BASE = 65535 - 2 ** 12 + 1
TPU_COORDINATOR_PORT = 8482


@dataclasses.dataclass(frozen=True)
class ClusterEnvironment:
  """What a job looks like from its environment (see `cluster_environment`).

  Attributes:
    scheduler: a key of `SCHEDULERS`: 'slurm', 'tpu', 'ompi', 'jax' (JAX_*
      variables only) or 'none'.
    num_processes: the number of processes of the job, None when unknown.
    process_id: this process's id in [0, num_processes), None when unknown.
    coordinator_address: 'host:port' of process 0, None when not derivable.
    local_device_ids: the devices this process takes among those it sees;
      None takes every one.
    overrides: the JAX_* variables that take precedence over the scheduler's.
    problem: '' or one sentence saying why the variables cannot work.
  """
  scheduler: str
  num_processes: int | None = None
  process_id: int | None = None
  coordinator_address: str | None = None
  local_device_ids: tuple[int, ...] | None = None
  overrides: tuple[str, ...] = ()
  problem: str = ""

  @property
  def complete(self) -> bool:
    """Whether jax.distributed can start from these values alone."""
    return None not in (self.num_processes, self.process_id,
                        self.coordinator_address)

  def describe(self) -> str:
    """One line: 'SLURM: 4 processes, coordinator node01:61447, ...'."""
    parts = [f"{self.num_processes} processes" if self.num_processes
             else "the process count found by jax.distributed"]
    if self.coordinator_address:
      parts.append(f"coordinator {self.coordinator_address}")
    if self.local_device_ids is not None:
      parts.append(f"local device ids {list(self.local_device_ids)}")
    if self.overrides:
      parts.append(f"set by {', '.join(self.overrides)}")
    return f"{SCHEDULERS[self.scheduler]}: {', '.join(parts)}"

  def initialize_kwargs(self) -> dict[str, Any]:
    """The arguments of `jax.distributed.initialize` for this environment.

    A complete layout (SLURM, Open MPI, JAX_* variables) is passed as is,
    with JAX's own detection off, so that JAX uses these very values; on a
    Cloud TPU, or with nothing detected (a TPU VM answers from its metadata
    server, not its environment), JAX detects the rest itself.
    """
    if self.complete and self.scheduler != "tpu":
      kwargs = {"coordinator_address": self.coordinator_address,
                "num_processes": self.num_processes,
                "process_id": self.process_id,
                "cluster_detection_method": "deactivate"}
      if self.local_device_ids is not None:
        kwargs["local_device_ids"] = list(self.local_device_ids)
      return kwargs
    known = {"num_processes": self.num_processes, "process_id": self.process_id,
             "coordinator_address": self.coordinator_address}
    return {k: v for k, v in known.items()
            if v is not None and _OVERRIDES[k] in self.overrides}


# The explicit variables, by `jax.distributed.initialize` argument.
_OVERRIDES = {"coordinator_address": "JAX_COORDINATOR_ADDRESS",
              "num_processes": "JAX_NUM_PROCESSES",
              "process_id": "JAX_PROCESS_ID",
              "local_device_ids": "JAX_LOCAL_DEVICE_IDS"}


class _Misconfigured(ValueError):
  """A variable that cannot be read; str() is the sentence."""


def cluster_environment(environ: Mapping[str, str] | None = None) -> ClusterEnvironment:
  """The scheduler, process count and id, coordinator and local devices of a job.

  Read from `environ` (default `os.environ`) only, with the variables JAX's
  cluster detection reads (jax/_src/clusters/), in its order:

  - Open MPI (mpirun): OMPI_MCA_orte_hnp_uri, OMPI_COMM_WORLD_SIZE / _RANK /
    _LOCAL_RANK.
  - SLURM (srun): SLURM_JOB_ID, SLURM_NTASKS, SLURM_PROCID, SLURM_LOCALID and
    SLURM_STEP_NODELIST (or SLURM_JOB_NODELIST); the coordinator is the
    first node of the list, e.g. 'node[01-02]' -> 'node01'.
  - Cloud TPU: TPU_WORKER_HOSTNAMES (or TPU_PROCESS_ADDRESSES), TPU_WORKER_ID
    (or CLOUD_TPU_TASK_ID), MEGASCALE_* for several slices; port 8482.
  - JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID,
    JAX_LOCAL_DEVICE_IDS, JAX_COORDINATOR_PORT: set, they win.

  Local devices (GPUs): JAX_LOCAL_DEVICE_IDS when set; else JAX's convention
  of one GPU per process ([local rank]) when several processes share a node
  and its GPUs (CUDA_VISIBLE_DEVICES, or SLURM_STEP_GPUS, lists more than
  one); else None, every device the process sees (one process per node, or
  GPUs that the scheduler bound to each task). Never on a TPU (JAX's rule).
  """
  environ = os.environ if environ is None else environ
  if "OMPI_MCA_orte_hnp_uri" in environ:
    scheduler = "ompi"
  elif all(k in environ for k in ("SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_PROCID",
                                  "SLURM_LOCALID")):
    scheduler = "slurm"
  elif "TPU_WORKER_HOSTNAMES" in environ or "TPU_PROCESS_ADDRESSES" in environ:
    scheduler = "tpu"
  elif any(environ.get(v) for v in _OVERRIDES.values()):
    scheduler = "jax"
  else:
    scheduler = "none"
  overrides = tuple(v for v in _OVERRIDES.values() if environ.get(v))
  try:
    found = _LAYOUTS[scheduler](environ) if scheduler in _LAYOUTS else {}
    for key, name in _OVERRIDES.items():
      if environ.get(name):
        found[key] = (_ids(environ, name) if key == "local_device_ids" else
                      environ[name] if key == "coordinator_address" else
                      _int(environ, name))
  except _Misconfigured as e:
    return ClusterEnvironment(scheduler, overrides=overrides, problem=str(e))
  env = ClusterEnvironment(scheduler, overrides=overrides, **found)
  return dataclasses.replace(env, problem=_problem(env, environ))


def _problem(env: ClusterEnvironment, environ: Mapping[str, str]) -> str:
  """'' or the sentence that says why `env` cannot work."""
  def origin(key):
    name = _OVERRIDES[key]
    if name in env.overrides:
      return name
    return {"slurm": {"num_processes": "SLURM_NTASKS", "process_id": "SLURM_PROCID"},
            "ompi": {"num_processes": "OMPI_COMM_WORLD_SIZE",
                     "process_id": "OMPI_COMM_WORLD_RANK"},
            "tpu": {"num_processes": "the TPU worker list",
                    "process_id": "TPU_WORKER_ID"}}[env.scheduler][key]

  n, i = env.num_processes, env.process_id
  if n is not None and n < 1:
    return f"{origin('num_processes')} is {n}; a job has at least one process"
  if n is not None and i is not None and not 0 <= i < n:
    return (f"the process id {i} ({origin('process_id')}) is out of range for "
            f"{n} processes ({origin('num_processes')}); ids run from 0 to {n - 1}")
  address = environ.get("JAX_COORDINATOR_ADDRESS", "")
  if address and not address.rpartition(":")[2].isdigit():
    return (f"JAX_COORDINATOR_ADDRESS is '{address}'; it must be host:port "
            "of process 0, e.g. node01:1234")
  if env.scheduler in ("slurm", "ompi") and env.coordinator_address is None:
    source = ("neither SLURM_STEP_NODELIST nor SLURM_JOB_NODELIST is set"
              if env.scheduler == "slurm" else
              "OMPI_MCA_orte_hnp_uri names no tcp address")
    return (f"the coordinator's address is unknown ({source}); set "
            "JAX_COORDINATOR_ADDRESS to host:port of process 0")
  if env.scheduler == "tpu" and env.process_id is None:
    return ("TPU_WORKER_HOSTNAMES lists the TPU workers but TPU_WORKER_ID "
            "(this worker's number) is not set")
  if env.scheduler == "jax" and not env.complete:
    missing = [_OVERRIDES[k] for k in ("coordinator_address", "num_processes",
                                        "process_id") if getattr(env, k) is None]
    return (f"{', '.join(env.overrides)} set but not {' and '.join(missing)}; "
            "set all three in every process, or launch under SLURM, Open MPI "
            "or on a Cloud TPU pod")
  return ""


def _int(environ: Mapping[str, str], name: str) -> int:
  try:
    return int(environ[name])
  except ValueError:
    raise _Misconfigured(f"{name} is '{environ[name]}', not a whole number") from None


def _ids(environ: Mapping[str, str], name: str) -> tuple[int, ...]:
  try:
    return tuple(int(x) for x in environ[name].split(",") if x.strip())
  except ValueError:
    raise _Misconfigured(f"{name} is '{environ[name]}', not a comma-separated "
                         "list of device numbers") from None


def _port(environ: Mapping[str, str], job_id: int) -> int:
  if environ.get("JAX_COORDINATOR_PORT"):
    return _int(environ, "JAX_COORDINATOR_PORT")
  return job_id % 2 ** 12 + _PORT_BASE


def _local_devices(environ: Mapping[str, str], local_rank: int,
                   processes_on_node: int | None, bound: bool) -> tuple[int, ...] | None:
  """[local rank] where processes share a node's GPUs, else None (all it sees)."""
  if processes_on_node == 1 or bound:
    return None
  visible = next((environ[v].split(",") for v in ("CUDA_VISIBLE_DEVICES",
                                                   "SLURM_STEP_GPUS")
                  if environ.get(v)), None)
  if visible is not None and (len(visible) == 1 or local_rank >= len(visible)):
    return None  # The scheduler gave this process its own GPU(s).
  return (local_rank,)


def _slurm_layout(environ: Mapping[str, str]) -> dict[str, Any]:
  nodes = environ.get("SLURM_STEP_NODELIST") or environ.get("SLURM_JOB_NODELIST", "")
  # The first host, as JAX finds it: 'node01', 'node01,host2' -> 'node01';
  # 'node[01-04],host2', 'node[01,07-09]' -> 'node01'.
  first = re.match(r"([^,\[]*)(?:\[([^,\-\]]*))?", nodes)
  host = first.group(1) + (first.group(2) or "")
  num_processes = _int(environ, "SLURM_NTASKS")
  num_nodes = next((_int(environ, v) for v in ("SLURM_STEP_NUM_NODES",
                                               "SLURM_JOB_NUM_NODES", "SLURM_NNODES")
                    if environ.get(v)), None)
  if environ.get("SLURM_NTASKS_PER_NODE"):
    on_node = _int(environ, "SLURM_NTASKS_PER_NODE")
  else:
    on_node = 1 if num_nodes == num_processes else _slurm_tasks_on_node(environ)
  local_rank = _int(environ, "SLURM_LOCALID")
  return {"num_processes": num_processes,
          "process_id": _int(environ, "SLURM_PROCID"),
          "coordinator_address": (f"{host}:{_port(environ, _int(environ, 'SLURM_JOB_ID'))}"
                                  if host else None),
          "local_device_ids": _local_devices(
              environ, local_rank, on_node,
              bound=bool(environ.get("SLURM_GPUS_PER_TASK")))}


def _slurm_tasks_on_node(environ: Mapping[str, str]) -> int | None:
  """This node's task count from SLURM_STEP_TASKS_PER_NODE ('2(x3),1')."""
  text = environ.get("SLURM_STEP_TASKS_PER_NODE") or environ.get(
      "SLURM_TASKS_PER_NODE", "")
  counts = []
  for part in filter(None, text.split(",")):
    m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
    if not m:
      return None
    counts += [int(m.group(1))] * int(m.group(2) or 1)
  node = int(environ.get("SLURM_NODEID", "0") or 0)
  return counts[node] if node < len(counts) else None


def _ompi_layout(environ: Mapping[str, str]) -> dict[str, Any]:
  uri = environ["OMPI_MCA_orte_hnp_uri"]  # '1531576320.0;tcp://10.0.0.1,...:34911'
  found = re.search(r"tcp://(.+?)[,:]|tcp6://\[(.+?)[,\]]", uri)
  job = uri.split(".", 1)[0]
  address = None
  if found and job.isdigit():
    host = next(g for g in found.groups() if g is not None)
    address = f"{host}:{_port(environ, int(job) // 2 ** 12)}"
  local_rank = _int(environ, "OMPI_COMM_WORLD_LOCAL_RANK")
  on_node = (_int(environ, "OMPI_COMM_WORLD_LOCAL_SIZE")
             if environ.get("OMPI_COMM_WORLD_LOCAL_SIZE") else None)
  return {"num_processes": _int(environ, "OMPI_COMM_WORLD_SIZE"),
          "process_id": _int(environ, "OMPI_COMM_WORLD_RANK"),
          "coordinator_address": address,
          "local_device_ids": _local_devices(environ, local_rank, on_node, False)}


def _tpu_layout(environ: Mapping[str, str]) -> dict[str, Any]:
  workers = (environ.get("TPU_PROCESS_ADDRESSES")
             or environ["TPU_WORKER_HOSTNAMES"]).split(",")
  slices = _int(environ, "MEGASCALE_NUM_SLICES") if environ.get(
      "MEGASCALE_NUM_SLICES") else 1
  slice_id = _int(environ, "MEGASCALE_SLICE_ID") if environ.get(
      "MEGASCALE_SLICE_ID") else 0
  worker = next((_int(environ, v) for v in ("TPU_WORKER_ID", "CLOUD_TPU_TASK_ID")
                 if environ.get(v)), None)
  host = (environ.get("MEGASCALE_COORDINATOR_ADDRESS") or workers[0]).split(":")[0]
  port = (_int(environ, "JAX_COORDINATOR_PORT") if environ.get("JAX_COORDINATOR_PORT")
          else TPU_COORDINATOR_PORT)
  return {"num_processes": len(workers) * slices,
          "process_id": None if worker is None else worker + slice_id * len(workers),
          "coordinator_address": f"{host}:{port}"}


_LAYOUTS = {"slurm": _slurm_layout, "ompi": _ompi_layout, "tpu": _tpu_layout}


def initialize_distributed() -> ClusterEnvironment:
  """Joins the processes of a multi-host job (once; a no-op when joined).

  The layout comes from `cluster_environment()`: SLURM, Open MPI and Cloud
  TPU are detected; elsewhere set JAX_COORDINATOR_ADDRESS (host:port of
  process 0), JAX_NUM_PROCESSES and JAX_PROCESS_ID in every process. A layout
  that cannot work is one sentence (CnnjaxError) before anything starts;
  process 0 prints the layout once on stderr.
  """
  env = cluster_environment()
  if jax.distributed.is_initialized():
    return env
  if env.problem:
    raise CnnjaxError(f"config.parallel.distributed is set but {env.problem}")
  # CPU processes exchange data through Gloo (GPUs and TPUs have their own).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(**env.initialize_kwargs())
  except (RuntimeError, ValueError) as e:
    raise CnnjaxError(
        "config.parallel.distributed is set but jax.distributed.initialize() "
        f"failed ({str(e).splitlines()[0]}); set JAX_COORDINATOR_ADDRESS, "
        "JAX_NUM_PROCESSES and JAX_PROCESS_ID, or run under SLURM/MPI/TPU") from e
  if jax.process_index() == 0:
    print(f"cnnjax: {env.describe()}; joined {jax.process_count()} processes "
          f"with {jax.device_count()} {jax.devices()[0].platform} devices "
          f"({jax.local_device_count()} on process 0)", file=sys.stderr)
  return env


def max_over_processes(value: int) -> int:
  """The largest `value` of all processes (every process must call it).

  A host sync: it waits for the work already sent to the devices, then
  all-gathers one number per process. One process: `value`, no sync.
  """
  if jax.process_count() == 1:
    return int(value)
  from jax.experimental import multihost_utils  # Only multi-host runs need it.
  return int(np.max(multihost_utils.process_allgather(np.int32(value))))


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
