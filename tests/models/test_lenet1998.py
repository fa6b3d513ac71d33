"""The 1998 LeNet-5: parameter counts, Table I, subsampling, RBF outputs."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnnjax.cli import main
from cnnjax.errors import CnnjaxError
from cnnjax.models import create_model
from cnnjax.models.lenet import (C3_TABLE, DIGIT_PROTOTYPES, SQUASH_AMPLITUDE,
                                 SQUASH_SLOPE, SparseConv, Subsampling,
                                 scaled_tanh)
from conftest import QUICK_COMPILE

# LeCun et al. 1998, Section II.B: each layer's trainable parameters.
LAYER_PARAMS = {"c1": 156, "s2": 12, "c3": 1_516, "s4": 32, "c5": 48_120,
                "f6": 10_164}

# Table I, read column by column: the S2 maps each C3 map takes.
TABLE_I = {0: {0, 1, 2}, 1: {1, 2, 3}, 2: {2, 3, 4}, 3: {3, 4, 5},
           4: {0, 4, 5}, 5: {0, 1, 5},
           6: {0, 1, 2, 3}, 7: {1, 2, 3, 4}, 8: {2, 3, 4, 5}, 9: {0, 3, 4, 5},
           10: {0, 1, 4, 5}, 11: {0, 1, 2, 5},
           12: {0, 1, 3, 4}, 13: {1, 2, 4, 5}, 14: {0, 2, 3, 5},
           15: {0, 1, 2, 3, 4, 5}}


def _count(tree):
  return sum(x.size for x in jax.tree.leaves(tree))


def _init(model, x):
  return jax.jit(model.init, compiler_options=QUICK_COMPILE)(
      jax.random.key(0), x)


def test_every_layer_has_the_papers_parameter_count():
  model = create_model("lenet5_1998")
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 1))))
  assert set(variables) == {"params"}  # The prototypes are no variable.
  params = variables["params"]
  assert {k: _count(v) for k, v in params.items()} == LAYER_PARAMS
  assert _count(params) == 60_000
  assert params["c3"]["kernel"].shape == (5, 5, 60)  # Only the connected kernels.
  assert params["s2"]["coefficient"].shape == params["s2"]["bias"].shape == (6,)


def test_c3_table_is_table_i_and_unconnected_maps_do_not_reach_an_output():
  assert {o: set(maps) for o, maps in enumerate(C3_TABLE)} == TABLE_I
  assert sum(len(m) for m in C3_TABLE) == 60
  conv = SparseConv(C3_TABLE)
  x = jax.random.normal(jax.random.key(1), (1, 9, 9, 6))
  variables = _init(conv, x)

  def map_sum(x, o):
    return conv.apply(variables, x)[..., o].sum()

  for o in (0, 9, 14, 15):
    # Which input maps the gradient of output map o reaches.
    g = jax.grad(map_sum)(x, o)
    reached = {i for i in range(6) if np.any(np.asarray(g[..., i]) != 0)}
    assert reached == TABLE_I[o], o


def test_sparse_conv_matches_a_per_map_reference():
  conv = SparseConv(C3_TABLE)
  x = jax.random.normal(jax.random.key(2), (2, 7, 7, 6))
  variables = _init(conv, x)
  kernel = np.asarray(variables["params"]["kernel"])  # (5, 5, 60)
  bias = np.asarray(variables["params"]["bias"])
  xs = np.asarray(x)
  expected = np.zeros((2, 3, 3, 16))
  k = 0
  for o, maps in enumerate(C3_TABLE):
    for i in maps:  # Connections in table order, inputs ascending.
      for r in range(3):
        for c in range(3):
          expected[:, r, c, o] += np.einsum(
              "bhw,hw->b", xs[:, r:r + 5, c:c + 5, i], kernel[:, :, k])
      k += 1
    expected[..., o] += bias[o]
  np.testing.assert_allclose(conv.apply(variables, x), expected,
                             rtol=1e-5, atol=1e-5)


def test_scaled_tanh_constants():
  assert SQUASH_AMPLITUDE == 1.7159 and SQUASH_SLOPE == 2 / 3
  np.testing.assert_allclose(scaled_tanh(jnp.array([-1.0, 0.0, 1.0, 50.0])),
                             [-1.0, 0.0, 1.0, 1.7159], atol=1e-4)


def test_subsampling_is_a_scaled_window_sum_plus_bias():
  s = Subsampling()
  x = jax.random.normal(jax.random.key(3), (2, 4, 6, 3))
  params = {"coefficient": jnp.array([0.5, -2.0, 1.0]),
            "bias": jnp.array([0.1, 0.0, -0.3])}
  y = s.apply({"params": params}, x)
  sums = np.asarray(x).reshape(2, 2, 2, 3, 2, 3).sum(axis=(2, 4))
  np.testing.assert_allclose(y, sums * [0.5, -2.0, 1.0] + [0.1, 0.0, -0.3],
                             rtol=1e-5, atol=1e-6)


def test_rbf_logits_are_minus_distances_to_fixed_prototypes():
  assert DIGIT_PROTOTYPES.shape == (10, 84)
  assert set(np.unique(DIGIT_PROTOTYPES)) == {-1.0, 1.0}
  distinct = [np.sum(a != b) for i, a in enumerate(DIGIT_PROTOTYPES)
              for b in DIGIT_PROTOTYPES[i + 1:]]
  assert min(distinct) >= 8  # Every pair of bitmaps differs in 8+ pixels.
  model = create_model("lenet5_1998")
  x = jax.random.normal(jax.random.key(4), (3, 32, 32, 1))
  variables = _init(model, x)
  logits, inter = model.apply(variables, x, capture_intermediates=True,
                              mutable=["intermediates"])
  f6 = np.asarray(scaled_tanh(inter["intermediates"]["f6"]["__call__"][0]))
  expected = -((f6[:, None, :] - DIGIT_PROTOTYPES[None]) ** 2).sum(-1)
  np.testing.assert_allclose(logits, expected, rtol=1e-5)
  # Fewer classes take the first prototypes; none gives F6's features.
  four = create_model("lenet5_1998", num_classes=4).apply(variables, x)
  np.testing.assert_allclose(four, logits[:, :4], rtol=1e-6)
  assert create_model("lenet5_1998", num_classes=0).apply(
      variables, x).shape == (3, 84)
  with pytest.raises(CnnjaxError, match="prototypes for 10 digits"):
    create_model("lenet5_1998", num_classes=11).init(jax.random.key(0), x)


def test_summary_prints_each_layers_count_and_60000(capsys):
  assert main(["summary", "lenet5_1998", "--no-xla"]) == 0
  text = capsys.readouterr().out
  rows = {line.split()[0]: line.split() for line in text.splitlines()
          if line.split() and line.split()[0] in {*LAYER_PARAMS, "head"}}
  for name, count in LAYER_PARAMS.items():
    assert f"{count:,}" in rows[name], rows[name]
  assert rows["head"][1] == "EuclideanRBF" and "0" in rows["head"]
  assert "parameters: 60,000 trainable, 0 other" in text


def test_summary_counts_the_custom_layers_flops():
  """C3's 1,500 weights each see 10x10 positions: 150,000 multiply-adds (the
  paper's 151,600 connections less the 1,600 of the biases); the RBF head
  compares 84 features with 10 prototypes, counted as one multiply-add each.
  S2/S4, like every pooling, are not counted."""
  from cnnjax.analysis import summarize

  rows = {r.name: r for r in summarize(create_model("lenet5_1998"), (32, 32, 1),
                                       xla_flops=False).rows}
  assert rows["c1"].flops == 2 * 28 * 28 * 6 * 25
  assert rows["c3"].flops == 2 * 150_000
  assert rows["head"].flops == 2 * 84 * 10
  assert rows["s2"].flops is None and rows["s4"].flops is None


def test_a_few_training_steps_lower_the_loss():
  model = create_model("lenet5_1998")
  x = jax.random.normal(jax.random.key(5), (16, 32, 32, 1))
  labels = jnp.arange(16) % 10
  params = _init(model, x)["params"]
  tx = optax.adam(1e-3)

  def loss_fn(p):
    logits = model.apply({"params": p}, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  @jax.jit
  def step(p, opt_state):
    loss, grads = jax.value_and_grad(loss_fn)(p)
    updates, opt_state = tx.update(grads, opt_state, p)
    return optax.apply_updates(p, updates), opt_state, loss, grads

  opt_state = tx.init(params)
  losses = []
  for _ in range(6):
    params, opt_state, loss, grads = step(params, opt_state)
    losses.append(float(loss))
  assert losses[-1] < 0.9 * losses[0], losses
  # Every trainable array gets a gradient; nothing else is trained.
  assert set(grads) == set(LAYER_PARAMS)
  assert all(np.any(np.asarray(g) != 0) for g in jax.tree.leaves(grads))
