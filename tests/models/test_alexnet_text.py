"""AlexNet, ZFNet, the X/O toy ConvNet, image MLPs and Kim's sentence CNN."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import cnnjax.models.alexnet  # noqa: F401  (registers the models)
import cnnjax.models.text_cnn  # noqa: F401
import cnnjax.models.toy  # noqa: F401
from cnnjax.analysis import summarize
from cnnjax.errors import CnnjaxError
from cnnjax.models import create_model, model_input_dtype, model_input_shape
from cnnjax.models.text_cnn import with_pretrained_embeddings
from cnnjax.models.toy import xo_features, xo_images
from conftest import random_variables

# Exact parameter counts at each model's default classes and input.
PARAMS = {
    # One tower: 34,944 + 614,656 + 885,120 + 1,327,488 + 884,992 (convs)
    # + 37,752,832 + 16,781,312 + 4,097,000 (FC6-8).
    "alexnet": 62_378_344,
    # Grouped conv2/4/5 save 307,200 + 663,552 + 442,368 weights.
    "alexnet_groups": 60_965_224,
    "alexnet_tv": 61_100_840,  # torchvision
    # conv1 is 7x7x3x96 + 96 = 14,208 instead of 34,944; the rest as alexnet.
    "zfnet": 62_357_608,
    "xo_convnet": 140,  # 3x3x1x3+3, 3x3x3x3+3, 12x2+2
    "mlp_cifar": 1_841_162,  # 3072*512+512, 512*512+512, 512*10+10
    "mlp_mnist": 669_706,  # the Keras MNIST MLP
    # 20,000 x 300 table + (3+4+5) x 300 x 100 + 300 biases + 300 x 2 + 2.
    "kim_cnn_rand": 6_360_902,
    "kim_cnn_static": 6_360_902,  # The frozen table is still a parameter.
    "kim_cnn_nonstatic": 6_360_902,
    "kim_cnn_multichannel": 12_360_902,  # Two tables, shared filters.
}

# Small stand-ins for gradient tests: (input shape, overrides).
SMALL = {
    "alexnet": ((67, 67, 3), {"hidden": 32}),  # 67: smallest for pool5.
    "alexnet_groups": ((67, 67, 3), {"hidden": 32}),
    "zfnet": ((64, 64, 3), {"hidden": 32}),
    "xo_convnet": ((9, 9, 1), {}),
    "mlp_cifar": ((32, 32, 3), {"hidden_sizes": (32, 32)}),
    "kim_cnn_multichannel": ((12,), dict(vocab_size=50, embed_dim=8,
                                         num_filters=4)),
    "kim_cnn_static": ((12,), dict(vocab_size=50, embed_dim=8,
                                   num_filters=4)),
}


def _count(tree):
  return sum(x.size for x in jax.tree.leaves(tree))


def _abstract_init(name, **overrides):
  model = create_model(name, **overrides)
  x = jnp.zeros((1, *model_input_shape(name)), model_input_dtype(name))
  return model, jax.eval_shape(lambda: model.init(jax.random.key(0), x))


def _inputs(name, shape, batch=2, seed=1):
  key = jax.random.key(seed)
  if model_input_dtype(name) == "int32":
    return jax.random.randint(key, (batch, *shape), 0, 50)
  return jax.random.normal(key, (batch, *shape))


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_parameter_counts(name):
  _, variables = _abstract_init(name)
  assert _count(variables["params"]) == PARAMS[name]


def _map_sizes(name):
  return [(r.name, r.output_shape[0]) for r in summarize(
      name, xla_flops=False).rows if len(r.output_shape) == 3]


def test_alexnet_map_sizes_follow_the_lecture():
  # CONV1 55, POOL1 27, NORM1 27, CONV2 27, POOL2 13, NORM2 13, CONV3-5 13,
  # POOL3 6.
  assert _map_sizes("alexnet") == [
      ("conv1", 55), ("pool1", 27), ("lrn1", 27), ("conv2", 27),
      ("pool2", 13), ("lrn2", 13), ("conv3", 13), ("conv4", 13),
      ("conv5", 13), ("pool5", 6)]
  assert [s for _, s in _map_sizes("alexnet_groups")] == [
      55, 27, 27, 27, 13, 13, 13, 13, 13, 6]


def test_zfnet_map_sizes_are_those_of_figure_3():
  # 110, 55, 26, 13, 13, 13, 6 (convolutions and poolings; LRN keeps sizes).
  assert _map_sizes("zfnet") == [
      ("conv1", 110), ("pool1", 55), ("lrn1", 55), ("conv2", 26),
      ("pool2", 13), ("lrn2", 13), ("conv3", 13), ("conv4", 13),
      ("conv5", 13), ("pool5", 6)]


def test_alexnet_receptive_field_and_tv_flops():
  rows = {r.name: r for r in summarize("alexnet", xla_flops=False).rows}
  assert rows["pool5"].receptive_field == (195, 195)
  summary = summarize("alexnet_tv", xla_flops=False)
  macs = summary.flops_counted / 2
  assert abs(macs / 0.714e9 - 1) < 0.02  # torchvision: 0.71 GFLOPS (MACs).


def test_groups_split_conv2_conv4_conv5_only():
  _, variables = _abstract_init("alexnet_groups")
  shapes = {k: v["kernel"].shape for k, v in variables["params"].items()
            if k.startswith("conv")}
  assert shapes == {"conv1": (11, 11, 3, 96), "conv2": (5, 5, 48, 256),
                    "conv3": (3, 3, 256, 384), "conv4": (3, 3, 192, 384),
                    "conv5": (3, 3, 192, 256)}


@pytest.mark.parametrize("name,width", [
    ("alexnet_tv", 4096), ("mlp_mnist", 512), ("xo_convnet", 12),
    ("kim_cnn_rand", 300)])
def test_num_classes_zero_returns_features(name, width):
  model = create_model(name, num_classes=0)
  x = jnp.zeros((2, *model_input_shape(name)), model_input_dtype(name))
  out = jax.eval_shape(lambda: model.apply(
      model.init(jax.random.key(0), x), x))
  assert out.shape == (2, width)
  assert "head" not in jax.eval_shape(
      lambda: model.init(jax.random.key(0), x))["params"]


@pytest.mark.parametrize("name", sorted(SMALL))
def test_forward_backward_and_dropout(name):
  """Every parameter gets a gradient (except frozen word vectors), and
  dropout makes training differ from evaluation."""
  shape, overrides = SMALL[name]
  model = create_model(name, num_classes=3, **overrides)
  x = _inputs(name, shape)
  params = random_variables(model, x)["params"]

  @jax.jit
  def run(params, rng):  # One compilation: gradient and evaluation.
    def loss(params):
      out = model.apply({"params": params}, x, train=True,
                        rngs={"dropout": rng})
      return jnp.sum(jax.nn.log_softmax(out)[:, 0]), out
    (_, train_out), grads = jax.value_and_grad(loss, has_aux=True)(params)
    return grads, train_out, model.apply({"params": params}, x)

  grads, train_out, eval_out = run(params, jax.random.key(2))
  assert eval_out.shape == (2, 3) and np.all(np.isfinite(eval_out))
  frozen = {"kim_cnn_static": "embedding",
            "kim_cnn_multichannel": "embedding_static"}.get(name)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    top = path[0].key
    if top == frozen:
      assert np.all(np.asarray(g) == 0), f"{top} is frozen but has a gradient"
    else:
      assert np.any(np.asarray(g) != 0), f"no gradient reaches {path}"
  if name != "xo_convnet":  # The toy net has no dropout.
    assert not np.allclose(train_out, eval_out)


# --- the X/O toy network --------------------------------------------------


def test_xo_first_stage_maps_match_the_material():
  images, labels = xo_images()
  assert images.shape == (2, 9, 9, 1) and list(labels) == [0, 1]
  assert set(np.unique(images)) == {-1.0, 1.0}
  assert images[0, 4, 4, 0] == 1 and images[1, 4, 4, 0] == -1
  model = create_model("xo_convnet")
  params = jax.tree.map(jnp.zeros_like, jax.eval_shape(
      lambda: model.init(jax.random.key(0), images))["params"])
  params["conv1"] = {"kernel": jnp.asarray(xo_features()),
                     "bias": jnp.zeros(3)}  # Only conv1 matters here.
  _, state = jax.jit(lambda p, x: model.apply(
      {"params": p}, x, capture_intermediates=True,
      mutable=["intermediates"]))(params, images)
  maps = np.asarray(state["intermediates"]["conv1"]["__call__"][0])[0]
  # The material's map of the diagonal feature over the X, times 9; its
  # first row is 0.77 -0.11 0.11 0.33 0.55 -0.11 0.33. 1.00 = a perfect match.
  np.testing.assert_allclose(maps[:, :, 0] * 9, [
      [7, -1, 1, 3, 5, -1, 3],
      [-1, 9, -1, 3, -1, 1, -1],
      [1, -1, 9, -3, 1, -1, 5],
      [3, 3, -3, 5, -3, 3, 3],
      [5, -1, 1, -3, 9, -1, 1],
      [-1, 1, -1, 3, -1, 9, -1],
      [3, -1, 5, 3, 1, -1, 7]], atol=1e-5)
  # The anti-diagonal feature sees the mirror image.
  np.testing.assert_allclose(maps[:, :, 2], maps[:, ::-1, 0], atol=1e-6)
  assert maps[3, 3, 1] == pytest.approx(1.0)  # The X's centre.


def test_xo_convnet_learns_x_versus_o():
  images, labels = xo_images()
  rng = np.random.default_rng(0)
  xs, ys = [], []
  for dy in (-1, 0, 1):
    for dx in (-1, 0, 1):
      for _ in range(3):
        shifted = np.roll(images, (dy, dx), axis=(1, 2))
        xs.append(shifted + 0.3 * rng.standard_normal(shifted.shape))
        ys.append(labels)
  x = jnp.asarray(np.concatenate(xs), jnp.float32)  # (54, 9, 9, 1)
  y = jnp.asarray(np.concatenate(ys))
  model = create_model("xo_convnet")
  params = random_variables(model, x)["params"]
  opt = optax.adam(0.03)

  def loss(params):
    logits = model.apply({"params": params}, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  @jax.jit
  def train(params):
    def step(carry, _):
      params, opt_state = carry
      updates, opt_state = opt.update(jax.grad(loss)(params), opt_state)
      return (optax.apply_updates(params, updates), opt_state), None
    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None,
                                  length=200)
    return params

  params = train(params)
  predictions = jnp.argmax(model.apply({"params": params}, x), -1)
  assert float(jnp.mean(predictions == y)) == 1.0


# --- Kim's sentence CNN ---------------------------------------------------


def test_kim_padding_id_has_a_zero_vector_and_no_gradient():
  model = create_model("kim_cnn_nonstatic", vocab_size=20, embed_dim=4,
                       num_filters=3)
  tokens = jnp.array([[5, 6, 7, 8, 0, 0], [1, 2, 3, 0, 0, 0]], jnp.int32)
  params = random_variables(model, tokens)["params"]
  table = params["embedding"]["embedding"]
  assert table.shape == (20, 4)

  @jax.jit
  def run(params):
    def loss(params):
      return jnp.sum(model.apply({"params": params}, tokens) ** 2)
    logits, state = model.apply({"params": params}, tokens,
                                capture_intermediates=True,
                                mutable=["intermediates"])
    vectors = state["intermediates"]["embedding"]["__call__"][0]
    return vectors, logits, jax.grad(loss)(params)["embedding"]["embedding"]

  vectors, logits, g = run(params)  # vectors: (2, 6, 4)
  np.testing.assert_array_equal(vectors[0, 4:], 0.0)
  np.testing.assert_array_equal(vectors[0, 0], table[5])
  assert np.all(g[0] == 0) and np.any(g[5] != 0)
  assert np.all(g[9:] == 0)  # Unused words get nothing either.
  # Whatever row 0 holds (e.g. a loaded vector) changes nothing.
  loaded = with_pretrained_embeddings(params, table.at[0].set(5.0))
  np.testing.assert_array_equal(run(loaded)[1], logits)


def test_kim_modes_and_pretrained_vectors():
  tokens = jnp.ones((2, 8), jnp.int32)
  multi = create_model("kim_cnn_multichannel", vocab_size=10, embed_dim=4,
                       num_filters=2)
  params = jax.tree.map(jnp.zeros_like, jax.eval_shape(
      lambda: multi.init(jax.random.key(0), tokens))["params"])
  assert sorted(params) == ["conv_w3", "conv_w4", "conv_w5",
                            "embedding_nonstatic", "embedding_static", "head"]
  # Both channels share each filter: kernel (width, embed_dim, maps).
  assert params["conv_w4"]["kernel"].shape == (4, 4, 2)
  vectors = jnp.arange(40.0).reshape(10, 4)
  loaded = with_pretrained_embeddings(params, vectors)
  for name in ("embedding_static", "embedding_nonstatic"):
    np.testing.assert_array_equal(loaded[name]["embedding"], vectors)
  with pytest.raises(CnnjaxError, match="pretrained vectors have shape"):
    with_pretrained_embeddings(params, jnp.zeros((9, 4)))
  def init(x, **overrides):
    model = create_model("kim_cnn_rand", **overrides)
    return jax.eval_shape(lambda: model.init(jax.random.key(0), x))

  with pytest.raises(CnnjaxError, match="mode must be one of"):
    init(tokens, mode="nonstatic")
  with pytest.raises(CnnjaxError, match="integer token ids"):
    init(jnp.zeros((2, 8)))
  with pytest.raises(CnnjaxError, match="does not fit"):  # 3 tokens < width 5.
    init(jnp.ones((2, 3), jnp.int32))


