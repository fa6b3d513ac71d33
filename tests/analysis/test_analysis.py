"""Output sizes, receptive fields and model summaries."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.analysis import (LayerGeometry, ReceptiveField, conv_output_shape,
                             conv_output_size, conv_parameters,
                             receptive_fields, stacked_versus_single,
                             summarize)
from cnnjax.cli import main
from cnnjax.errors import CnnjaxError
from cnnjax.models import list_models
from conftest import slow_if_deeper


@pytest.mark.parametrize("stride, expected", [(1, 5), (2, 3)])
def test_output_size_of_the_lecture_7x7_examples(stride, expected):
  assert conv_output_size(7, 3, stride) == expected


def test_a_3x3_filter_at_stride_3_does_not_fit_a_7x7_input():
  with pytest.raises(CnnjaxError, match=r"does not fit.*2\.33"):
    conv_output_size(7, 3, stride=3)
  # Frameworks round down and silently drop the last input column.
  assert conv_output_size(7, 3, stride=3, strict=False) == 2


def test_output_size_with_padding_dilation_and_same():
  assert conv_output_size(32, 5, 1, 2) == 32  # The lecture: pad 2 keeps 32.
  assert conv_output_size(227, 11, 4) == 55  # AlexNet CONV1.
  assert conv_output_size(55, 3, 2) == 27  # Overlapping pooling.
  assert conv_output_size(9, 3, dilation=2) == 5  # Spans 5 inputs.
  assert conv_output_size(7, 3, 2, "SAME") == 4
  assert conv_output_size(7, 3, 1, (0, 2)) == 7
  # ResNet's stem does not fit evenly either; frameworks drop a column.
  assert conv_output_shape((224, 224), 7, 2, 3, strict=False) == (112, 112)
  with pytest.raises(CnnjaxError, match="112.50"):
    conv_output_shape((224, 224), 7, 2, 3)
  with pytest.raises(CnnjaxError, match="does not fit"):
    conv_output_size(4, 5)
  with pytest.raises(CnnjaxError, match="positive"):
    conv_output_size(7, 3, stride=0)
  with pytest.raises(CnnjaxError, match="padding"):
    conv_output_size(7, 3, padding="FULL")


def test_output_size_matches_lax_on_random_settings():
  rng = np.random.default_rng(0)
  for _ in range(30):
    w, f, s, d = (int(rng.integers(5, 20)), int(rng.integers(1, 4)),
                  int(rng.integers(1, 4)), int(rng.integers(1, 3)))
    p = int(rng.integers(0, 3))
    x = jnp.zeros((1, w, 1))
    k = jnp.zeros((f, 1, 1))
    y = jax.eval_shape(lambda x, k: jax.lax.conv_general_dilated(
        x, k, (s,), [(p, p)], rhs_dilation=(d,),
        dimension_numbers=("NWC", "WIO", "NWC")), x, k)
    assert conv_output_size(w, f, s, p, d, strict=False) == y.shape[1]


def test_parameters_of_ten_5x5_filters_on_a_32x32x3_input():
  # The lecture: each filter has 5*5*3 + 1 = 76 parameters, 760 in all.
  assert conv_parameters(5, 3, 10) == 760
  assert conv_parameters((3, 3), 64, 64, groups=32, bias=False) == 9 * 2 * 64
  with pytest.raises(CnnjaxError, match="groups"):
    conv_parameters(3, 10, 12, groups=4)


def test_three_stacked_3x3_convolutions_see_7x7_with_fewer_parameters():
  fields = receptive_fields([(3, 1)] * 3)
  assert [f.size for f in fields] == [3, 5, 7]
  c = 64
  cmp = stacked_versus_single(3, 3, c)
  assert cmp["receptive_field"] == 7
  assert cmp["stacked_parameters"] == 3 * 9 * c * c == 27 * c * c
  assert cmp["single_parameters"] == 49 * c * c


def test_receptive_field_jump_and_centre():
  # AlexNet's first two layers: 11x11/4 then 3x3/2 pooling.
  f = receptive_fields([(11, 4), (3, 2)])
  assert (f[0].size, f[0].jump, f[0].start) == (11, 4, 5)
  assert (f[1].size, f[1].jump, f[1].start) == (19, 8, 9)
  # Dilation 2 widens a 3-tap filter to 5; padding moves the centres left.
  f = receptive_fields([(3, 1, 2, 2)])[0]
  assert (f.size, f.start) == (5, 0)
  # A pointwise (1x1) layer changes nothing.
  assert ReceptiveField(7, 2, 3).after(LayerGeometry(1)) == ReceptiveField(
      7, 2, 3)


class _Chain(nn.Module):
  """Linear, with positive weights: every input in a unit's field has a
  positive gradient, so the gradient's support is the field exactly."""

  @nn.compact
  def __call__(self, x, *, train=False):
    init = nn.initializers.uniform(1.0)
    x = nn.Conv(2, (3, 3), kernel_init=init, name="a")(x)
    x = nn.Conv(2, (3, 3), strides=2, kernel_init=init, name="b")(x)
    x = nn.avg_pool(x, (2, 2), (2, 2))  # A function: the summary infers it.
    return nn.Conv(2, (3, 3), kernel_dilation=2, padding=2, kernel_init=init,
                   name="c")(x)


def test_summary_receptive_fields_equal_gradient_support():
  model = _Chain()
  x = jnp.ones((1, 40, 40, 1))
  variables = model.init(jax.random.key(0), x)
  summary = summarize(model, (40, 40, 1))
  assert [r.name for r in summary.rows] == ["a", "b", "c"]
  for row in summary.rows:
    sub = {"a": 1, "b": 2, "c": 3}[row.name]

    def unit(x, sub=sub):
      y = model.apply(variables, x, capture_intermediates=True)[1]
      inner = y["intermediates"][["a", "b", "c"][sub - 1]]["__call__"][0]
      i, j = inner.shape[1] // 2, inner.shape[2] // 2
      return inner[0, i, j, 0]

    g = np.abs(np.asarray(jax.grad(unit)(x)))[0, :, :, 0] > 0
    rows_hit = np.flatnonzero(g.any(axis=1))
    cols_hit = np.flatnonzero(g.any(axis=0))
    # The field is the extent; a dilated filter leaves holes inside it.
    extent = (rows_hit[-1] - rows_hit[0] + 1, cols_hit[-1] - cols_hit[0] + 1)
    assert row.receptive_field == extent, row.name
    i = model.apply(variables, x, capture_intermediates=True)[1][
        "intermediates"][row.name]["__call__"][0].shape[1] // 2
    centre = (rows_hit[0] + rows_hit[-1]) / 2
    assert row.start[0] + i * row.jump[0] == centre, row.name
  # a: 3; b: 3 + 2 = 5 (jump 2); pool 2/2: 5 + 2 = 7 (jump 4);
  # c, dilation 2: 7 + 4 * 2 * 2 = 23 (jump 4).
  assert [r.receptive_field[0] for r in summary.rows] == [3, 5, 23]
  assert [r.jump[0] for r in summary.rows] == [1, 2, 4]


def test_summary_counts_parameters_flops_and_memory_of_lenet5():
  s = summarize("lenet5")
  assert s.params == 61_706
  convs = [r for r in s.rows if r.kind == "Conv"]
  assert [r.params for r in convs] == [156, 2_416]
  # C1: 28*28*6 outputs, 5*5*1 multiply-adds each, 2 FLOPs per multiply-add.
  assert convs[0].flops == 2 * 28 * 28 * 6 * 25
  assert s.flops_counted == sum(r.flops for r in s.rows if r.flops)
  # XLA counts the same multiply-adds plus the elementwise work around them.
  assert s.flops_counted <= s.flops_xla <= 1.1 * s.flops_counted
  assert s.forward_activation_bytes == 4 * (1024 + sum(
      r.activations for r in s.rows))
  assert s.training_activation_bytes == 2 * s.forward_activation_bytes


# Deeper copies of a shallower sibling's blocks (same code path, more of
# them) are summarized only with -m slow; so are the thousand-layer ones.
@pytest.mark.parametrize("name", slow_if_deeper(list_models()))
def test_summary_works_for_every_registered_model(name):
  s = summarize(name, xla_flops=False)
  assert s.rows and s.params > 0
  assert s.params == sum(r.params for r in s.rows)
  assert "parameters:" in s.format()


def test_summary_cli_prints_the_table_and_writes_json(tmp_path, capsys):
  out = tmp_path / "s.json"
  assert main(["summary", "mnist1d_cnn", "--num-classes", "4",
               "--json", str(out)]) == 0
  text = capsys.readouterr().out
  assert "conv1" in text and "receptive field" in text
  data = json.loads(out.read_text())
  assert data["params"] == 5_210 - 6 * 126  # Four classes instead of ten.
  assert data["rows"][0]["receptive_field"] == [5]


@pytest.mark.parametrize("args, message", [
    (["summary", "lenet6"], "unknown model 'lenet6'; did you mean"),
    (["summary", "lenet5", "--input-shape", "3,3,1"], "cannot take an input"),
    (["summary", "lenet5", "--input-shape", "a,b"], "--input-shape must be"),
    (["summary", "lenet5", "--option", "depth=3"], "has no option 'depth'"),
])
def test_summary_cli_errors_are_one_sentence(args, message, capsys):
  assert main(args) == 2
  err = capsys.readouterr().err
  assert message in err and "Traceback" not in err
