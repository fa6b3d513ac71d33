"""Region ops (cnnjax.ops.roi, cnnjax.ops.boxes) against torchvision's
definitions: NumPy transcriptions of its C++ kernels (roi_reference.py), its
pure-PyTorch RoI Align for boxes inside the map, and its Python box
functions. float32, forward and gradients, within 1e-5."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.errors import CnnjaxError
from cnnjax.ops import boxes as box_ops
from cnnjax.ops import roi

import roi_reference as ref

# (N, H, W, C): odd sizes, two images.
SHAPE = (2, 7, 9, 3)
# [batch, x1, y1, x2, y2] in input pixels (the map is SHAPE's at spatial_scale).
ROIS = np.array([
    [0, 1.0, 1.0, 5.0, 4.0],      # inside
    [1, 0.3, 2.7, 8.6, 6.2],      # inside, fractional
    [0, -3.0, -2.5, 4.0, 3.0],    # partly outside (top left)
    [1, 6.0, 4.0, 14.0, 11.5],    # partly outside (bottom right)
    [0, 2.2, 3.1, 2.6, 3.3],      # tiny
    [1, 4.0, 2.0, 4.0, 5.0],      # degenerate: zero width
    [0, -12.0, -9.0, 20.0, 16.0],  # the map and more around it
    [1, 8.5, 6.5, 9.0, 7.0],      # at the far corner
], np.float32)
INSIDE = ROIS[:2]


def _features(seed=0, shape=SHAPE):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


ALIGN_CASES = [(scale, ratio, aligned) for scale in (1.0, 0.5) for ratio in (-1, 2, 3)
               for aligned in (False, True)]


@pytest.mark.parametrize("scale,ratio,aligned", ALIGN_CASES)
def test_roi_align_matches_the_kernel_forward_and_backward(scale, ratio, aligned):
  x = _features()
  rois = ROIS.copy()
  out_size = (3, 4)
  got = roi.roi_align(jnp.asarray(x), jnp.asarray(rois), out_size, scale, ratio, aligned)
  want = ref.roi_align(x, rois, out_size, scale, ratio, aligned)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
  cotangent = _features(1, want.shape)
  _, vjp = jax.vjp(lambda f: roi.roi_align(f, jnp.asarray(rois), out_size, scale, ratio,
                                           aligned), jnp.asarray(x))
  np.testing.assert_allclose(vjp(jnp.asarray(cotangent))[0],
                             ref.roi_align_backward(cotangent, x.shape, rois, out_size, scale,
                                                    ratio, aligned), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("ratio,aligned", [(-1, False), (2, True), (-1, True)])
def test_roi_align_matches_torchvisions_pytorch_version_inside_the_map(ratio, aligned):
  from conftest import import_torchvision
  import_torchvision()
  import importlib

  import torch

  tv_module = importlib.import_module("torchvision.ops.roi_align")  # the module
  pure = tv_module._roi_align.__wrapped__  # the function, not its torch.compile wrapper
  x = _features()
  torch_x = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
  out = pure(torch_x, torch.tensor(INSIDE), 1.0, 2, 3, ratio, aligned)
  cotangent = _features(2, tuple(out.shape))
  out.backward(torch.tensor(cotangent))
  got, vjp = jax.vjp(lambda f: roi.roi_align(f, jnp.asarray(INSIDE), (2, 3), 1.0, ratio,
                                             aligned), jnp.asarray(x))
  np.testing.assert_allclose(got, out.detach().numpy().transpose(0, 2, 3, 1), atol=1e-5)
  np.testing.assert_allclose(vjp(jnp.asarray(cotangent.transpose(0, 2, 3, 1)))[0],
                             torch_x.grad.numpy().transpose(0, 2, 3, 1), atol=1e-5)


def test_roi_align_under_jit_equals_eager_for_boxes_inside_the_image():
  """Traced boxes: the adaptive grid is capped at ceil(H / out) (exact for
  boxes in the image); a static sampling ratio needs no cap."""
  x = jnp.asarray(_features())
  image_boxes = jnp.asarray(np.concatenate([INSIDE, ROIS[4:6]]))
  for ratio, aligned in ((-1, False), (-1, True), (2, False)):
    fn = jax.jit(lambda f, r: roi.roi_align(f, r, (3, 3), 1.0, ratio, aligned))
    np.testing.assert_allclose(fn(x, image_boxes),
                               ref.roi_align(np.asarray(x), np.asarray(image_boxes), (3, 3),
                                             1.0, ratio, aligned), atol=1e-5)


@pytest.mark.parametrize("scale", [1.0, 0.5, 0.25])
def test_roi_pool_matches_the_kernel_forward_and_backward(scale):
  x = _features(3)
  out_size = (2, 3)
  got = roi.roi_pool(jnp.asarray(x), jnp.asarray(ROIS), out_size, scale)
  want, argmax = ref.roi_pool(x, ROIS, out_size, scale)
  np.testing.assert_allclose(got, want, atol=1e-6)
  cotangent = _features(4, want.shape)
  _, vjp = jax.vjp(lambda f: roi.roi_pool(f, jnp.asarray(ROIS), out_size, scale),
                   jnp.asarray(x))
  np.testing.assert_allclose(vjp(jnp.asarray(cotangent))[0],
                             ref.roi_pool_backward(cotangent, x.shape, ROIS, argmax), atol=1e-5)


def test_roi_pool_gradient_goes_to_the_first_of_tied_maxima_and_jit_agrees():
  x = np.zeros((1, 4, 4, 1), np.float32)
  x[0, 1, 2, 0] = x[0, 2, 1, 0] = 5.0  # a tie; (1, 2) comes first row-major
  rois = jnp.asarray([[0, 0.0, 0.0, 3.0, 3.0]])
  grad = jax.grad(lambda f: roi.roi_pool(f, rois, 1).sum())(jnp.asarray(x))
  assert grad[0, 1, 2, 0] == 1 and float(grad.sum()) == 1
  jitted = jax.jit(lambda f, r: roi.roi_pool(f, r, (2, 2)))
  np.testing.assert_allclose(jitted(jnp.asarray(_features(5)), jnp.asarray(ROIS)),
                             ref.roi_pool(_features(5), ROIS, (2, 2))[0], atol=1e-6)


def _random_boxes(n, seed, size=40.0):
  rng = np.random.default_rng(seed)
  xy = rng.uniform(0, size, (n, 2))
  wh = rng.uniform(0, size / 2, (n, 2))
  wh[::7] = 0  # some empty boxes
  return np.concatenate([xy, xy + wh], 1).astype(np.float32)


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_nms_matches_the_kernel_and_pads_to_a_fixed_size(threshold):
  boxes = _random_boxes(60, 0)
  scores = np.random.default_rng(1).integers(0, 8, 60).astype(np.float32)  # many ties
  want = ref.nms(boxes, scores, threshold)
  for fn in (box_ops.nms, jax.jit(box_ops.nms, static_argnums=(2, 3))):
    indices, valid = fn(jnp.asarray(boxes), jnp.asarray(scores), threshold, 64)
    assert indices.shape == (64,) and int(valid.sum()) == len(want)
    np.testing.assert_array_equal(np.asarray(indices)[np.asarray(valid)], want)
    assert (np.asarray(indices)[~np.asarray(valid)] == -1).all()
  short, valid = box_ops.nms(jnp.asarray(boxes), jnp.asarray(scores), threshold, 5)
  np.testing.assert_array_equal(short, want[:5])


def test_batched_nms_keeps_categories_apart():
  boxes = _random_boxes(50, 2)
  scores = np.random.default_rng(3).random(50).astype(np.float32)
  categories = np.random.default_rng(4).integers(0, 3, 50)
  indices, valid = box_ops.batched_nms(jnp.asarray(boxes), jnp.asarray(scores),
                                       jnp.asarray(categories), 0.4, 50)
  kept = []
  for c in range(3):
    members = np.flatnonzero(categories == c)
    kept += members[ref.nms(boxes[members], scores[members], 0.4)].tolist()
  want = sorted(kept, key=lambda i: (-scores[i], i))
  np.testing.assert_array_equal(np.asarray(indices)[np.asarray(valid)], want)


def test_box_iou_and_coder_match_torchvision():
  from conftest import import_torchvision
  tv = import_torchvision()
  import torch
  from torchvision.models.detection._utils import BoxCoder

  a = (_random_boxes(12, 5) + [0, 0, 1, 1]).astype(np.float32)  # none empty
  b = (_random_boxes(9, 6) + [0, 0, 1, 1]).astype(np.float32)
  np.testing.assert_allclose(box_ops.box_iou(jnp.asarray(a), jnp.asarray(b)),
                             tv.ops.box_iou(torch.tensor(a), torch.tensor(b)).numpy(),
                             rtol=1e-6, atol=1e-6)
  weights = (10.0, 10.0, 5.0, 5.0)
  coder = BoxCoder(weights)
  anchors = a[:9]
  codes = box_ops.encode_boxes(jnp.asarray(b), jnp.asarray(anchors), weights)
  np.testing.assert_allclose(codes, coder.encode_single(torch.tensor(b), torch.tensor(anchors)),
                             rtol=1e-5, atol=1e-5)
  wild = np.random.default_rng(7).normal(0, 3, (9, 4)).astype(np.float32) * [1, 1, 20, 20]
  np.testing.assert_allclose(
      box_ops.decode_boxes(jnp.asarray(wild), jnp.asarray(anchors), weights),
      coder.decode_single(torch.tensor(wild), torch.tensor(anchors)).numpy(), rtol=1e-5,
      atol=1e-4)
  np.testing.assert_allclose(box_ops.decode_boxes(codes, jnp.asarray(anchors), weights), b,
                             rtol=1e-5, atol=1e-4)


def test_box_iou_by_hand():
  iou = box_ops.box_iou(jnp.asarray([[0.0, 0, 2, 2]]), jnp.asarray([[1.0, 1, 3, 3],
                                                                   [2.0, 2, 4, 4]]))
  np.testing.assert_allclose(iou, [[1 / 7, 0.0]])


@pytest.mark.parametrize("call,message", [
    (lambda: roi.roi_align(jnp.zeros(SHAPE), jnp.asarray([[0, 3.0, 1, 2, 4]]), 2),
     "x2 < x1"),
    (lambda: roi.roi_pool(jnp.zeros(SHAPE), jnp.asarray(ROIS), 2, spatial_scale=0.0),
     "spatial_scale must be a positive"),
    (lambda: roi.roi_align(jnp.zeros(SHAPE), jnp.asarray([[2, 0.0, 0, 1, 1]]), 2),
     "batch indices"),
    (lambda: roi.roi_align(jnp.zeros(SHAPE), jnp.zeros((3, 4)), 2), "(K, 5)"),
    (lambda: box_ops.nms(jnp.asarray([[0.0, 5, 1, 4]]), jnp.ones(1), 0.5), "x2 < x1"),
    (lambda: box_ops.nms(jnp.zeros((2, 4)), jnp.ones(2), 0.5, -1), "max_output_size"),
])
def test_bad_input_gets_one_sentence(call, message):
  with pytest.raises(CnnjaxError, match=message.replace("(", r"\(").replace(")", r"\)")):
    call()
