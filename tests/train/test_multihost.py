"""Multi-host runs: the job's layout from its environment, coordinated
preemption of several processes, and elastic restore from 2 processes to 1.

The environment tests read explicit dicts and never start jax.distributed.
The preemption chain (`-m slow`) runs processes of one jax.distributed job on
this machine (2 processes x 2 CPU devices, Gloo), with the helpers of
test_parallel.py.
"""

import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from conftest import CLI, EXPERIMENTS
from test_parallel import finish_processes, multihost_command, start_processes

from cnnjax import parallel
from cnnjax.errors import CnnjaxError

# ---- the job's layout, from environment variables

SLURM = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "4", "SLURM_PROCID": "3",
         "SLURM_LOCALID": "1", "SLURM_NODEID": "1",
         "SLURM_STEP_NODELIST": "node[01-02]", "SLURM_STEP_NUM_NODES": "2",
         "SLURM_STEP_TASKS_PER_NODE": "2(x2)"}


def test_slurm_gives_the_layout_and_the_first_node_as_coordinator():
  env = parallel.cluster_environment(dict(SLURM, CUDA_VISIBLE_DEVICES="0,1"))
  assert env.scheduler == "slurm" and not env.problem
  assert (env.num_processes, env.process_id) == (4, 3)
  # JAX's port convention: the job id modulo 4096, above 61440.
  assert env.coordinator_address == f"node01:{4242 % 4096 + 61440}"
  # Two tasks share the node's two GPUs: one each, by local rank.
  assert env.local_device_ids == (1,)
  assert env.initialize_kwargs() == {
      "coordinator_address": "node01:61586", "num_processes": 4, "process_id": 3,
      "local_device_ids": [1], "cluster_detection_method": "deactivate"}
  assert env.describe().startswith("SLURM: 4 processes, coordinator node01:61586")


@pytest.mark.parametrize("nodes, host", [
    ("node07", "node07"), ("gpu-a01,gpu-b02", "gpu-a01"),
    ("node[1,7-9],login", "node1"), ("rack2-n[003-010]", "rack2-n003")])
def test_slurm_coordinator_is_the_first_host_of_any_nodelist(nodes, host):
  env = parallel.cluster_environment(dict(SLURM, SLURM_STEP_NODELIST=nodes,
                                          JAX_COORDINATOR_PORT="1234"))
  assert env.coordinator_address == f"{host}:1234"


def test_slurm_job_nodelist_is_the_fallback_of_the_step_nodelist():
  environ = {k: v for k, v in SLURM.items() if k != "SLURM_STEP_NODELIST"}
  env = parallel.cluster_environment(dict(environ, SLURM_JOB_NODELIST="cn[5-6]"))
  assert env.coordinator_address.startswith("cn5:")
  env = parallel.cluster_environment(environ)
  assert env.coordinator_address is None
  assert "SLURM_STEP_NODELIST nor SLURM_JOB_NODELIST" in env.problem


@pytest.mark.parametrize("changes", [
    {"SLURM_NTASKS_PER_NODE": "1", "SLURM_LOCALID": "0"},  # one task per node
    {"SLURM_NTASKS": "2", "SLURM_PROCID": "1", "SLURM_LOCALID": "0",
     "SLURM_STEP_TASKS_PER_NODE": "1(x2)"},                 # the same, derived
    {"CUDA_VISIBLE_DEVICES": "3"},                          # a GPU bound to the task
    {"SLURM_GPUS_PER_TASK": "2", "CUDA_VISIBLE_DEVICES": "2,3"}])
def test_slurm_processes_alone_with_their_gpus_take_every_visible_one(changes):
  env = parallel.cluster_environment({**SLURM, "CUDA_VISIBLE_DEVICES": "0,1,2,3",
                                      **changes})
  assert env.local_device_ids is None and not env.problem
  assert "local_device_ids" not in env.initialize_kwargs()


def test_slurm_step_gpus_tell_how_many_gpus_the_node_shares():
  env = parallel.cluster_environment(dict(SLURM, SLURM_STEP_GPUS="4,5"))
  assert env.local_device_ids == (1,)


def test_a_process_id_out_of_the_slurm_range_is_one_sentence(monkeypatch):
  env = parallel.cluster_environment(dict(SLURM, JAX_PROCESS_ID="4"))
  assert env.scheduler == "slurm" and env.overrides == ("JAX_PROCESS_ID",)
  assert env.problem == ("the process id 4 (JAX_PROCESS_ID) is out of range for 4 "
                         "processes (SLURM_NTASKS); ids run from 0 to 3")
  # initialize_distributed says so before jax.distributed starts anything.
  import jax
  monkeypatch.setattr(os, "environ", dict(SLURM, JAX_PROCESS_ID="4"))
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: pytest.fail(
      "jax.distributed.initialize was called"))
  with pytest.raises(CnnjaxError, match=r"^config.parallel.distributed is set "
                     r"but the process id 4 \(JAX_PROCESS_ID\) is out of range"):
    parallel.initialize_distributed()


def test_explicit_jax_variables_win_over_the_scheduler():
  env = parallel.cluster_environment(dict(
      SLURM, JAX_COORDINATOR_ADDRESS="10.0.0.1:9999", JAX_NUM_PROCESSES="8",
      JAX_PROCESS_ID="6", JAX_LOCAL_DEVICE_IDS="0,1"))
  assert (env.num_processes, env.process_id, env.coordinator_address,
          env.local_device_ids) == (8, 6, "10.0.0.1:9999", (0, 1))
  assert not env.problem


@pytest.mark.parametrize("environ, problem", [
    ({"SLURM_NTASKS": "four"}, "SLURM_NTASKS is 'four', not a whole number"),
    ({"SLURM_NTASKS": "0", "SLURM_PROCID": "0"}, "SLURM_NTASKS is 0"),
    ({"SLURM_PROCID": "4"}, "the process id 4 (SLURM_PROCID) is out of range for 4"),
    ({"JAX_LOCAL_DEVICE_IDS": "0;1"}, "JAX_LOCAL_DEVICE_IDS is '0;1', not a"),
    ({"JAX_COORDINATOR_ADDRESS": "node01"}, "JAX_COORDINATOR_ADDRESS is 'node01'; "
     "it must be host:port")])
def test_slurm_misconfigurations_are_one_sentence(environ, problem):
  assert parallel.cluster_environment(dict(SLURM, **environ)).problem.startswith(problem)


def test_cloud_tpu_workers_give_the_layout():
  environ = {"TPU_WORKER_HOSTNAMES": "t1v-n-0,t1v-n-1,t1v-n-2,t1v-n-3",
             "TPU_WORKER_ID": "2"}
  env = parallel.cluster_environment(environ)
  assert env.scheduler == "tpu" and not env.problem
  assert (env.num_processes, env.process_id) == (4, 2)
  assert env.coordinator_address == "t1v-n-0:8482"
  assert env.local_device_ids is None  # JAX never restricts TPU chips itself.
  assert env.initialize_kwargs() == {}  # JAX finds the TPU itself (metadata too).
  # Two slices: process ids go on across the slices; Megascale's coordinator.
  env = parallel.cluster_environment(dict(
      environ, MEGASCALE_NUM_SLICES="2", MEGASCALE_SLICE_ID="1",
      MEGASCALE_COORDINATOR_ADDRESS="slice0-host:8080"))
  assert (env.num_processes, env.process_id) == (8, 6)
  assert env.coordinator_address == "slice0-host:8482"
  env = parallel.cluster_environment({"TPU_PROCESS_ADDRESSES": "a:8476,b:8476",
                                      "CLOUD_TPU_TASK_ID": "1"})
  assert (env.num_processes, env.process_id, env.coordinator_address) == (2, 1, "a:8482")
  env = parallel.cluster_environment({"TPU_WORKER_HOSTNAMES": "a,b"})
  assert "TPU_WORKER_ID" in env.problem


def test_open_mpi_gives_the_layout():
  env = parallel.cluster_environment({
      "OMPI_MCA_orte_hnp_uri": "1531576320.0;tcp://10.96.0.1,10.148.0.1:34911",
      "OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1",
      "OMPI_COMM_WORLD_LOCAL_RANK": "0", "OMPI_COMM_WORLD_LOCAL_SIZE": "1"})
  assert env.scheduler == "ompi" and not env.problem
  assert env.coordinator_address == f"10.96.0.1:{1531576320 // 4096 % 4096 + 61440}"
  assert (env.num_processes, env.process_id, env.local_device_ids) == (2, 1, None)


def test_explicit_variables_alone_and_no_cluster():
  env = parallel.cluster_environment({"JAX_COORDINATOR_ADDRESS": "h0:1234",
                                      "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"})
  assert env.scheduler == "jax" and env.complete and not env.problem
  env = parallel.cluster_environment({"JAX_NUM_PROCESSES": "2"})
  assert env.problem.startswith("JAX_NUM_PROCESSES set but not "
                                "JAX_COORDINATOR_ADDRESS and JAX_PROCESS_ID")
  env = parallel.cluster_environment({"HOME": "/root"})
  assert env == parallel.ClusterEnvironment("none")
  assert env.initialize_kwargs() == {}  # jax.distributed may still find one.
  assert env.describe() == ("no cluster variables: the process count found by "
                            "jax.distributed")


# ---- one process: no agreement, so no host sync


def test_one_process_never_asks_the_others(tmp_path, monkeypatch):
  from cnnjax.train import loop
  from conftest import tiny_mnist1d_config

  assert parallel.max_over_processes(15) == 15
  monkeypatch.setattr(loop, "max_over_processes", lambda value: pytest.fail(
      "a single process all-gathered its stop flag"))
  config = tiny_mnist1d_config(num_steps=4, log_every=2, eval_every=4,
                               checkpoint_every=4)
  assert loop.train_and_evaluate(config, str(tmp_path))["num_steps"] == 4


# ---- a batch that the devices cannot share

def test_a_batch_size_the_devices_cannot_split_is_one_line(tmp_path, cli_env):
  env = dict(cli_env, JAX_PLATFORMS="cpu", XLA_FLAGS=(
      cli_env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"))
  proc = subprocess.run(
      [*CLI, "train", "--config", os.path.join(EXPERIMENTS, "mnist1d", "cnn.py"),
       "--workdir", str(tmp_path / "run"), "--config.batch_size=49",
       "--config.num_steps=2", "--config.progress_bar=false"],
      env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert proc.stderr.splitlines() == [
      "cnnjax: error: config.batch_size (49) must be a multiple of the number "
      "of devices (2); change it or set config.parallel.num_devices"]


# ---- preemption of one of two processes, resumed in two and in one

STEPS = {"batch_size": 48, "num_steps": 60, "log_every": 5, "eval_every": 30,
         "checkpoint_every": 30}


def _final(workdir) -> dict:
  with open(os.path.join(workdir, "result.json")) as f:
    return json.load(f)["final"]


def _logged(workdir) -> list[dict]:
  """metrics.jsonl without the wall-clock entries."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [{k: v for k, v in json.loads(line).items()
             if k not in ("time", "train/steps_per_s")} for line in f]


def _wait_for_a_log_line(workdir, procs, timeout=240.0):
  path = os.path.join(workdir, "metrics.jsonl")
  deadline = time.monotonic() + timeout
  while not (os.path.exists(path) and os.path.getsize(path)):
    assert all(p.poll() is None for p in procs), "a process ended before logging"
    assert time.monotonic() < deadline, "no step was logged"
    time.sleep(0.02)


@pytest.fixture(scope="module")
def preempted(tmp_path_factory, compilation_cache):
  """An uninterrupted 2-process run, and one whose process 1 alone gets
  SIGTERM after the first log line, then rerun with the same command; a copy
  of the interrupted run is finished in 1 process."""
  work = tmp_path_factory.mktemp("multihost")
  out = {"work": work}
  procs = start_processes(multihost_command(work / "straight", STEPS))
  outputs = finish_processes(procs)
  assert [p.returncode for p in procs] == [0, 0], outputs[0][-2000:]

  command = multihost_command(work / "preempted", STEPS)
  procs = start_processes(command)
  try:
    _wait_for_a_log_line(work / "preempted", procs)
    procs[1].send_signal(signal.SIGTERM)
  finally:
    out["interrupted"] = finish_processes(procs)
  out["interrupted_codes"] = [p.returncode for p in procs]
  checkpoints = work / "preempted" / "checkpoints"
  out["checkpoints"] = sorted(int(s) for s in os.listdir(checkpoints) if s.isdigit())
  shutil.copytree(work / "preempted", work / "elastic")

  procs = start_processes(command)
  out["resumed"] = finish_processes(procs)
  out["resumed_codes"] = [p.returncode for p in procs]
  return out


@pytest.mark.slow  # Three 2-process runs and a 1-process one: 65-85 s.
def test_sigterm_to_one_process_stops_both_at_the_same_checkpoint(preempted):
  codes, outputs = preempted["interrupted_codes"], preempted["interrupted"]
  assert codes == [128 + signal.SIGTERM] * 2, outputs[0][-2000:] + outputs[1][-2000:]
  (step,) = preempted["checkpoints"]  # Before step 30's regular checkpoint.
  assert 0 < step < STEPS["num_steps"] and step % STEPS["log_every"] == 0
  signalled = [line for line in outputs[1].splitlines() if "cnnjax: error" in line]
  assert signalled == [
      f"cnnjax: error: stopped by signal 15 at step {step}, the first step at "
      "which the 2 processes compared their signals; the checkpoint is saved in "
      f"{preempted['work'] / 'preempted'}; run the same command again in every "
      "process to resume"]
  other = [line for line in outputs[0].splitlines() if "cnnjax: error" in line]
  assert other == [
      f"cnnjax: error: stopped at step {step} because another of the 2 "
      "processes received signal 15; the checkpoint is saved in "
      f"{preempted['work'] / 'preempted'}; run the same command again in every "
      "process to resume"]
  assert "Traceback" not in outputs[0] + outputs[1]


@pytest.mark.slow  # The runs of `preempted` (65-85 s).
def test_the_rerun_resumes_and_ends_bit_for_bit_like_an_uninterrupted_run(preempted):
  outputs = preempted["resumed"]
  assert preempted["resumed_codes"] == [0, 0], outputs[0][-2000:]
  (step,) = preempted["checkpoints"]
  for output in outputs:
    assert f"Resuming from the checkpoint at step {step}" in output
  # The same 4 devices run the same programs on the same batches from the
  # same state, and XLA's CPU reductions and Gloo's all-reduce of 2 ranks
  # are deterministic: every logged number is the same float.
  work = preempted["work"]
  assert _final(work / "preempted") == _final(work / "straight")
  assert _logged(work / "preempted") == _logged(work / "straight")


@pytest.mark.slow  # The runs of `preempted` (65-85 s).
def test_a_checkpoint_of_two_processes_resumes_in_one(preempted, capsys):
  """Elastic restore: 2 processes x 2 devices -> 1 process, 1 device, the
  same global batch. The sums run in another order, so float tolerance."""
  from cnnjax.train import loop
  from conftest import tiny_mnist1d_config

  work = preempted["work"]
  result = loop.train_and_evaluate(tiny_mnist1d_config(**STEPS), str(work / "elastic"))
  (step,) = preempted["checkpoints"]
  assert f"Resuming from the checkpoint at step {step}" in capsys.readouterr().err
  assert result["device"]["count"] == 1
  straight = _final(work / "straight")
  assert result["final"].keys() == straight.keys()
  for k, v in straight.items():
    assert result["final"][k] == pytest.approx(v, rel=1e-4, abs=1e-5), k
