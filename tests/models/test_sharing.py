"""The weight-sharing family (models/sharing.py): pinned counts per
connectivity, the same layer shapes in all three, and the conv variant is
the MNIST-1D reference CNN."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.errors import CnnjaxError
from cnnjax.models import create_model, model_input_shape

KEY = jax.random.key(0)

# {(model, connectivity): trainable parameters} at 10 classes.
PARAMS = {
    # Layers of 19, 10 and 5 positions x 25 channels, then 125 x 10 + 10.
    ("sharing_mnist1d", "conv"): 5_210,  # = mnist1d_cnn: 150 + 1,900 + 1,900 + 1,260
    # 19 (5 x 25 + 25) + 10 (75 x 25 + 25) + 5 (75 x 25 + 25) + 1,260.
    ("sharing_mnist1d", "local"): 2_850 + 19_000 + 9_500 + 1_260,
    # (40 + 1) 475 + (475 + 1) 250 + (250 + 1) 125 + 1,260.
    ("sharing_mnist1d", "dense"): 19_475 + 119_000 + 31_375 + 1_260,
    # Maps of 8x8, 4x4 and 4x4 x 16 channels, then 256 x 10 + 10.
    ("sharing_digits", "conv"): 160 + 2_320 + 2_320 + 2_570,
    ("sharing_digits", "local"): 64 * (9 + 1) * 16 + 16 * (144 + 1) * 16 * 2 + 2_570,
    ("sharing_digits", "dense"): 257 * 1_024 + 1_025 * 256 + 257 * 256 + 2_570,
}


def _abstract(name, connectivity, **overrides):
  model = create_model(name, connectivity=connectivity, **overrides)
  x = jax.ShapeDtypeStruct((2, *model_input_shape(name)), jnp.float32)
  return model, jax.eval_shape(lambda a: model.init_with_output(KEY, a), x)


def _count(tree):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


@pytest.mark.parametrize("name, connectivity", sorted(PARAMS))
def test_parameter_counts_are_pinned(name, connectivity):
  _, (out, variables) = _abstract(name, connectivity)
  assert _count(variables["params"]) == PARAMS[(name, connectivity)]
  assert out.shape == (2, 10)


def test_the_pinned_counts_are_the_documented_ones():
  assert [PARAMS[("sharing_mnist1d", c)] for c in ("dense", "local", "conv")] == [
      171_110, 32_610, 5_210]
  assert [PARAMS[("sharing_digits", c)] for c in ("dense", "local", "conv")] == [
      593_930, 87_050, 7_370]


def _layer_shapes(name, connectivity):
  model = create_model(name, connectivity=connectivity)
  x = jnp.zeros((1, *model_input_shape(name)))

  def shapes(a):
    _, state = model.apply(model.init(KEY, a), a, capture_intermediates=True,
                           mutable=["intermediates"])
    return state["intermediates"]

  inter = jax.eval_shape(shapes, x)
  return {k: v["__call__"][0].shape for k, v in inter.items() if k != "__call__"}


@pytest.mark.parametrize("name, layers", [
    ("sharing_mnist1d", {"layer1": (1, 19, 25), "layer2": (1, 10, 25),
                         "layer3": (1, 5, 25), "head": (1, 10)}),
    ("sharing_digits", {"layer1": (1, 8, 8, 16), "layer2": (1, 4, 4, 16),
                        "layer3": (1, 4, 4, 16), "head": (1, 10)}),
])
def test_every_connectivity_has_the_same_layer_shapes(name, layers):
  for connectivity in ("conv", "local"):
    assert _layer_shapes(name, connectivity) == layers
  # The dense layers' outputs are reshaped to the same maps after the call.
  dense = create_model(name, connectivity="dense")
  params = jax.eval_shape(dense.init, KEY, jnp.zeros((1, *model_input_shape(name))))
  for layer, shape in layers.items():
    if layer != "head":
      assert params["params"][layer]["kernel"].shape[-1] == np.prod(shape[1:])


def _random_params(model, x, seed=0):
  shapes = jax.eval_shape(model.init, KEY, x)["params"]
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape) * 0.3,
                                            s.dtype), shapes)


def test_the_conv_variant_is_the_mnist1d_reference_cnn():
  x = jnp.asarray(np.random.default_rng(1).normal(size=(3, 40, 1)), jnp.float32)
  reference = create_model("mnist1d_cnn")
  params = _random_params(reference, x)
  ours = create_model("sharing_mnist1d", connectivity="conv")
  renamed = {f"layer{i}": params[f"conv{i}"] for i in (1, 2, 3)}
  renamed["head"] = params["head"]
  np.testing.assert_allclose(ours.apply({"params": renamed}, x),
                             reference.apply({"params": params}, x),
                             rtol=1e-5, atol=1e-5)


def test_local_with_tied_kernels_is_the_conv_variant():
  x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 16, 16, 1)), jnp.float32)
  conv = create_model("sharing_digits", connectivity="conv")
  local = create_model("sharing_digits", connectivity="local")
  params = _random_params(conv, x)
  shapes = jax.eval_shape(local.init, KEY, x)["params"]
  tied = {"head": params["head"]}
  for i in (1, 2, 3):
    layer, shape = params[f"layer{i}"], shapes[f"layer{i}"]
    features = layer["kernel"].shape[-1]
    tied[f"layer{i}"] = {
        "kernel": jnp.broadcast_to(layer["kernel"].reshape(-1, features),
                                   shape["kernel"].shape),
        "bias": jnp.broadcast_to(layer["bias"], shape["bias"].shape)}
  np.testing.assert_allclose(local.apply({"params": tied}, x),
                             conv.apply({"params": params}, x),
                             rtol=1e-5, atol=1e-5)


def test_the_local_variant_keeps_the_receptive_fields():
  from cnnjax.analysis.summary import summarize
  summary = summarize("sharing_digits", xla_flops=False, connectivity="local")
  fields = [r.receptive_field for r in summary.rows if r.name.startswith("layer")]
  assert fields == [(3, 3), (7, 7), (15, 15)]
  assert summary.params == PARAMS[("sharing_digits", "local")]


def test_an_unknown_connectivity_is_one_sentence():
  model = create_model("sharing_mnist1d", connectivity="shared")
  with pytest.raises(CnnjaxError, match="connectivity must be one of dense, "
                     "local, conv, got 'shared'"):
    jax.eval_shape(model.init, KEY, jnp.zeros((1, 40, 1)))
  model = create_model("sharing_mnist1d", kernel_sizes=(5, 3))
  with pytest.raises(CnnjaxError, match="one entry per layer"):
    jax.eval_shape(model.init, KEY, jnp.zeros((1, 40, 1)))


def test_limited_frequency_sharing_with_equal_sections_is_the_full_convolution():
  """Abdel-Hamid et al.'s limited weight sharing, every section given the
  full convolution's filters, computes what full sharing does."""
  x = jax.random.normal(jax.random.key(0), (3, 40, 51))
  full = create_model("freq_cnn", weight_sharing="full")
  limited = create_model("freq_cnn", weight_sharing="limited")
  vf = full.init(jax.random.key(1), x)
  vl = limited.init(jax.random.key(1), x)
  sections = vl["params"]["conv"]["kernel"].shape[0]
  kernel = vf["params"]["conv"]["kernel"].reshape(-1, 64)  # (8 bands x 51 frames, 64)
  conv = {"kernel": jnp.broadcast_to(kernel, (sections, *kernel.shape)),
          "bias": jnp.broadcast_to(vf["params"]["conv"]["bias"], (sections, 64))}
  vl = {"params": dict(vf["params"], conv=conv)}
  np.testing.assert_allclose(limited.apply(vl, x), full.apply(vf, x), rtol=1e-5, atol=1e-5)
  # Sections with filters of their own: no longer the same network.
  conv = dict(conv, kernel=conv["kernel"] * (1 + jnp.arange(sections))[:, None, None])
  assert not np.allclose(limited.apply({"params": dict(vf["params"], conv=conv)}, x),
                         full.apply(vf, x), atol=1e-3)
