"""Exports: StableHLO and ONNX programs that compute the model's logits at
any batch size, reloaded through jax.export and onnxruntime and compared with
`model.apply`; a trained run exported; and the one-sentence errors."""

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.errors import CnnjaxError
from cnnjax.export import (FORMATS, export_onnx, export_run, export_stablehlo,
                           load_onnx, load_stablehlo)

from conftest import random_variables, tiny_mnist1d_config

TOLERANCE = dict(rtol=1e-4, atol=1e-4)
# Small inputs keep these cheap: resnet18 at 32x32 still has its 7x7/2 stem,
# 3x3/2 max pooling, four stages with projection shortcuts and global
# pooling. Compiling a program costs time in proportion to the constants
# baked into it, so the default suite's resnet18 is a quarter as wide (the
# same layers, 1/16 of the weights); the full one is in the slow tier.
MODELS = {"lenet5": ({}, (32, 32, 1)), "resnet18": ({"width": 16}, (32, 32, 3))}


@pytest.fixture(scope="module", params=sorted(MODELS))
def network(request):
  """(name, model, variables, inputs (5, ...), their logits by model.apply)."""
  from cnnjax.models import create_model

  name = request.param
  fields, shape = MODELS[name]
  model = create_model(name, num_classes=7, **fields)
  variables = random_variables(model, jnp.zeros((1, *shape)), train=False)
  # Non-trivial running statistics: an export in training mode, or one that
  # dropped batch_stats, would not match.
  rng = np.random.default_rng(1)
  variables = jax.tree_util.tree_map_with_path(
      lambda path, v: (v + 0.2 * rng.random(v.shape).astype(v.dtype)
                       if getattr(path[-1], "key", "") in ("mean", "var") else v),
      variables)
  x = batch(shape, 5)
  # One compilation of the reference; in evaluation mode the examples of a
  # batch are independent, so a smaller batch's logits are a slice of these.
  expected = np.asarray(jax.jit(lambda x: model.apply(variables, x, train=False))(x))
  return name, model, variables, x, expected


def batch(shape, size, seed=0):
  return np.random.default_rng(seed).standard_normal((size, *shape)).astype(np.float32)


def test_stablehlo_runs_at_any_batch_size(network, tmp_path):
  name, model, variables, x, expected = network
  shape = x.shape[1:]
  path = export_stablehlo(model, variables, shape, str(tmp_path / "m.stablehlo"),
                          metadata={"model": name, "class_names": list("abcdefg")})
  assert path == str(tmp_path / "m.stablehlo")
  loaded = load_stablehlo(path)
  assert str(loaded.exported.in_avals[0].shape[0]) == "batch"  # Symbolic.
  for size in (1, 3):
    np.testing.assert_allclose(np.asarray(loaded(x[:size])), expected[:size],
                               **TOLERANCE)
  sidecar = json.load(open(path + ".json"))
  assert sidecar == loaded.metadata
  assert sidecar["model"] == name and sidecar["num_classes"] == 7
  assert sidecar["input_shape"] == list(shape) and sidecar["input_dtype"] == "float32"
  assert sidecar["class_names"] == list("abcdefg") and sidecar["batch"] == "dynamic"
  assert {"cnnjax", "jax", "jaxlib", "flax"} <= set(sidecar["versions"])
  assert sorted(os.listdir(tmp_path)) == ["m.stablehlo", "m.stablehlo.json"]
  with pytest.raises(CnnjaxError, match=r"takes a batch of shape \(B, "):
    loaded(np.zeros((2, 8, 8, shape[-1]), np.float32))


def test_onnx_runs_in_onnxruntime_at_two_batch_sizes(network, tmp_path):
  import onnx

  name, model, variables, x, expected = network
  shape = x.shape[1:]
  path = export_onnx(model, variables, shape, str(tmp_path / "m.onnx"),
                     metadata={"model": name})
  graph = onnx.load(path).graph
  assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
  loaded = load_onnx(path)
  for size in (2, 5):
    np.testing.assert_allclose(loaded(x[:size]), expected[:size], **TOLERANCE)
  assert loaded.metadata["opset"] >= 13 and loaded.metadata["num_classes"] == 7
  stored = {p.key: p.value for p in onnx.load(path).metadata_props}
  assert json.loads(stored["cnnjax"])["model"] == name


def test_a_fixed_batch_onnx_export_refuses_another_batch(tmp_path):
  from cnnjax.models import create_model

  model = create_model("lenet5", num_classes=3)
  variables = random_variables(model, jnp.zeros((1, 32, 32, 1)))
  path = export_onnx(model, variables, (32, 32, 1), str(tmp_path / "m.onnx"),
                     batch_size=2)
  loaded = load_onnx(path)
  x = batch((32, 32, 1), 2)
  np.testing.assert_allclose(loaded(x), np.asarray(model.apply(variables, x)),
                             **TOLERANCE)
  assert loaded.metadata["batch"] == 2
  with pytest.raises(CnnjaxError, match=r"takes a batch of shape \(2, 32, 32, 1\)"):
    loaded(batch((32, 32, 1), 3))


def test_a_model_without_a_dynamic_onnx_batch_gets_a_fixed_one(monkeypatch, tmp_path):
  import jax2onnx

  from cnnjax.models import create_model

  convert = jax2onnx.to_onnx

  def fixed_only(fn, inputs, **kwargs):
    if not isinstance(inputs[0].shape[0], int):
      raise TypeError("Shapes must be 1D sequences of concrete values")
    return convert(fn, inputs, **kwargs)

  monkeypatch.setattr(jax2onnx, "to_onnx", fixed_only)
  model = create_model("mlp", num_classes=3, hidden_sizes=(4,))
  variables = random_variables(model, jnp.zeros((1, 5)))
  loaded = load_onnx(export_onnx(model, variables, (5,), str(tmp_path / "m.onnx")))
  assert loaded.metadata["batch"] == 1 and "dynamic batch" in loaded.metadata["batch_note"]
  x = batch((5,), 1)
  np.testing.assert_allclose(loaded(x), np.asarray(model.apply(variables, x)),
                             **TOLERANCE)

  def never(fn, inputs, **kwargs):
    raise NotImplementedError("no plugin for primitive 'eigh'")

  monkeypatch.setattr(jax2onnx, "to_onnx", never)
  with pytest.raises(CnnjaxError, match=r"jax2onnx cannot convert model 'mlp' "
                     r"\(NotImplementedError: no plugin .*\); export it as StableHLO"):
    export_onnx(model, variables, (5,), str(tmp_path / "n.onnx"),
                metadata={"model": "mlp"})
  assert sorted(os.listdir(tmp_path)) == ["m.onnx", "m.onnx.json"]


def test_max_pooling_becomes_a_spatial_max_pool():
  """jax2onnx's MaxPool over (1, 1, B, H, W, C) with kernel (1, 3, 3, 1),
  which onnxruntime refuses, is rewritten into a 2D MaxPool over (B, C, H, W)."""
  import onnx
  import onnxruntime
  from onnx import TensorProto, helper

  from cnnjax.export.onnx import split_max_pools
  from cnnjax.layers.pooling import max_pool

  x = batch((7, 6, 3), 2)
  graph = helper.make_graph(
      [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[1, 3, 3, 1],
                        strides=[1, 2, 2, 1], pads=[0, 1, 1, 0, 0, 1, 1, 0])],
      "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 7, 6, 3])],
      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 2, 4, 3, 3])])
  proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
  assert split_max_pools(proto) == 1
  onnx.checker.check_model(proto)
  session = onnxruntime.InferenceSession(proto.SerializeToString())
  out = session.run(None, {"x": x[None, None]})[0][0, 0]
  expected = max_pool(jnp.asarray(x), 3, 2, padding=1)
  np.testing.assert_array_equal(out, np.asarray(expected))


@pytest.mark.slow
def test_full_resnet18_exports_match_at_64x64(tmp_path):
  from cnnjax.models import create_model

  model = create_model("resnet18", num_classes=1000)
  variables = random_variables(model, jnp.zeros((1, 64, 64, 3)), train=False)
  x = batch((64, 64, 3), 3)
  expected = np.asarray(jax.jit(lambda x: model.apply(variables, x, train=False))(x))
  hlo = load_stablehlo(export_stablehlo(model, variables, (64, 64, 3),
                                        str(tmp_path / "r.stablehlo")))
  onnx_model = load_onnx(export_onnx(model, variables, (64, 64, 3),
                                     str(tmp_path / "r.onnx")))
  for size in (1, 3):
    np.testing.assert_allclose(np.asarray(hlo(x[:size])), expected[:size], **TOLERANCE)
    np.testing.assert_allclose(onnx_model(x[:size]), expected[:size], **TOLERANCE)


# ---- runs

@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
  """A 4-step MNIST-1D run with checkpoints at steps 2 and 4."""
  from cnnjax.train import loop

  workdir = str(tmp_path_factory.mktemp("run"))
  config = tiny_mnist1d_config(num_steps=4, log_every=2, eval_every=2,
                               checkpoint_every=2)
  loop.train_and_evaluate(config, workdir)
  return workdir


def test_export_run_writes_the_runs_model_inside_the_run(trained_run):
  from cnnjax.runs import Run

  path = export_run(trained_run, "stablehlo")
  assert path == os.path.join(trained_run, "export", "model.stablehlo")
  trained = Run.open(trained_run).trained()
  inputs = trained.examples("test", 5).inputs
  loaded = load_stablehlo(path)
  np.testing.assert_allclose(np.asarray(loaded(inputs)),
                             np.asarray(trained.logits(inputs)), **TOLERANCE)
  sidecar = loaded.metadata
  assert sidecar["model"] == "mnist1d_cnn" and sidecar["step"] == 4
  assert sidecar["class_names"] == trained.class_names and sidecar["num_classes"] == 10
  assert sidecar["input_shape"] == list(trained.input_shape)
  assert "no normalization" in sidecar["input"] and sidecar["normalization"] is None
  assert os.path.realpath(sidecar["run"]) == os.path.realpath(trained_run)


def test_export_run_takes_a_checkpoint_and_an_out_path(trained_run, tmp_path):
  from cnnjax.runs import Run

  path = export_run(trained_run, "onnx", str(tmp_path / "deep" / "cnn.onnx"),
                    checkpoint=2)
  assert load_onnx(path).metadata["step"] == 2
  trained = Run.open(trained_run).trained(2)
  inputs = trained.examples("test", 3).inputs
  np.testing.assert_allclose(load_onnx(path)(inputs),
                             np.asarray(trained.logits(inputs)), **TOLERANCE)
  with pytest.raises(CnnjaxError, match="no checkpoint at step 3"):
    export_run(trained_run, "onnx", str(tmp_path / "x.onnx"), checkpoint=3)


def test_an_unknown_format_is_one_sentence_naming_the_known_ones(trained_run):
  assert {"stablehlo", "onnx"} <= set(FORMATS.names())
  with pytest.raises(CnnjaxError, match=r"unknown export format 'tflite'; the "
                     r"known formats are stablehlo, onnx"):
    export_run(trained_run, "tflite")


def test_a_run_without_a_checkpoint_is_refused_and_nothing_written(tmp_path):
  from cnnjax.runs import Run

  workdir = str(tmp_path / "fresh")
  Run(workdir).prepare(tiny_mnist1d_config())
  with pytest.raises(CnnjaxError, match="no checkpoint found"):
    export_run(workdir, "stablehlo")
  assert sorted(os.listdir(workdir)) == ["config.json"]


# ---- errors

def test_missing_jax2onnx_is_one_sentence_naming_the_extra(monkeypatch, tmp_path,
                                                            trained_run):
  monkeypatch.setitem(sys.modules, "jax2onnx", None)  # `import` now fails.
  message = (r"needs jax2onnx, which is not installed; install the onnx extra: "
             r"pip install 'cnnjax\[onnx\]'")
  with pytest.raises(CnnjaxError, match=message):
    export_onnx(None, {}, (4,), str(tmp_path / "m.onnx"))
  with pytest.raises(CnnjaxError, match=message):
    export_run(trained_run, "onnx", str(tmp_path / "r.onnx"))
  assert os.listdir(tmp_path) == []


def test_missing_onnxruntime_is_one_sentence_naming_the_extra(monkeypatch, tmp_path):
  import builtins

  real_import = builtins.__import__

  def without_onnxruntime(name, *args, **kwargs):
    if name.split(".")[0] == "onnxruntime":
      raise ImportError("No module named 'onnxruntime'")
    return real_import(name, *args, **kwargs)

  monkeypatch.delitem(sys.modules, "onnxruntime", raising=False)
  monkeypatch.setattr(builtins, "__import__", without_onnxruntime)
  with pytest.raises(CnnjaxError, match=r"needs onnxruntime, which is not "
                     r"installed; install the onnx extra: pip install 'cnnjax\[onnx\]'"):
    load_onnx(str(tmp_path / "m.onnx"))


def test_bad_out_paths_are_one_sentence_and_write_nothing(tmp_path):
  from cnnjax.models import create_model

  model = create_model("mlp", num_classes=3, hidden_sizes=(4,))
  variables = random_variables(model, jnp.zeros((1, 5)))
  (tmp_path / "dir").mkdir()
  (tmp_path / "file").write_text("x")
  with pytest.raises(CnnjaxError, match="it is a directory"):
    export_stablehlo(model, variables, (5,), str(tmp_path / "dir"))
  with pytest.raises(CnnjaxError, match="is a file, not a directory"):
    export_stablehlo(model, variables, (5,), str(tmp_path / "file" / "m.stablehlo"))
  with pytest.raises(CnnjaxError, match="output path is empty"):
    export_stablehlo(model, variables, (5,), "")
  assert sorted(os.listdir(tmp_path)) == ["dir", "file"]
  assert os.listdir(tmp_path / "dir") == []
  path = export_stablehlo(model, variables, (5,), str(tmp_path / "new" / "m.shlo"))
  x = batch((5,), 4)
  np.testing.assert_allclose(np.asarray(load_stablehlo(path)(x)),
                             np.asarray(model.apply(variables, x)), **TOLERANCE)


def test_loading_something_else_is_one_sentence(tmp_path):
  (tmp_path / "junk.stablehlo").write_bytes(b"not a program")
  with pytest.raises(CnnjaxError, match="is not a serialized jax.export program"):
    load_stablehlo(str(tmp_path / "junk.stablehlo"))
  with pytest.raises(CnnjaxError, match="cannot read the export"):
    load_stablehlo(str(tmp_path / "missing.stablehlo"))
