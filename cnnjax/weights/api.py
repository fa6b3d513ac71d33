"""Pretrained models: a weight file in, a cnnjax model and its variables out;
cnnjax variables out as the twin's state dict.

    from cnnjax.weights import create_model
    model, variables = create_model("resnet50", pretrained="resnet50-0676ba61.pth")
    logits = model.apply(variables, images, train=False)   # (B, 224, 224, 3)

    # ten classes: the backbone is loaded, the classifier drawn afresh
    model, variables = create_model("resnet50", pretrained=path, num_classes=10)

    # a backbone returning the maps of stages 1-4 (see models/backbone.py)
    model, variables = create_model("resnet50", pretrained=path,
                                    features_only=True, out_indices=(1, 2, 3, 4))

Nothing is downloaded: `pretrained` is a file, or a directory holding one
(a torch hub or Hugging Face cache); `Twin.weights` says where the official
files live.
"""

from __future__ import annotations

import dataclasses

from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnnjax import models
from cnnjax.errors import CnnjaxError
from cnnjax.ops import random as random_ops
from cnnjax.weights import files
from cnnjax.weights.convert import (ImportReport, state_dict_to_variables,
                                    variables_to_state_dict)
from cnnjax.weights.twins import twin_of


@dataclasses.dataclass
class Pretrained:
  """A model, its imported variables and what the import did."""
  name: str
  model: nn.Module
  variables: dict
  report: ImportReport
  fields: dict  # The model fields it was built with (for a run's config).


def _input_shape(name: str, input_shape) -> tuple[int, ...]:
  return tuple(input_shape) if input_shape else models.model_input_shape(name)


def import_state_dict(name: str, state: Mapping[str, np.ndarray], *,
                      num_classes: int | None = None, rng: int = 0,
                      input_shape=None, source: str = "the state dict",
                      **overrides) -> Pretrained:
  """cnnjax model `name` with the weights of a state dict of its twin.

  `num_classes` None takes the file's class count; another number keeps the
  backbone and initializes a new classifier (the report says so).
  `overrides` are model fields; the fields the twin's weights need (e.g.
  GoogLeNet's transform_input) are set unless given.
  """
  twin = twin_of(name)
  renamed = {twin.rename(k): v for k, v in state.items()}
  head_name = twin.torch_module("head")[0]
  head = renamed.get(f"{head_name}.weight")
  file_classes = None if head is None else int(head.shape[0])
  fields = dict(twin.import_fields)
  fields.update(overrides)
  if num_classes is None:
    if file_classes is None:
      raise CnnjaxError(f"{source} has no classifier '{head_name}.weight' to "
                        f"take the class count from; is it a {twin.name} file?")
    num_classes = file_classes
  if not isinstance(num_classes, int) or num_classes < 1:
    raise CnnjaxError(f"num_classes must be a positive integer, got {num_classes!r}")
  fields["num_classes"] = num_classes
  model = models.create_model(name, **fields)
  variables, report = state_dict_to_variables(
      name, model, renamed, input_shape=_input_shape(name, input_shape),
      reinit_head=file_classes is not None and num_classes != file_classes,
      rng=rng, source=source)
  return Pretrained(name, model, variables, report, fields)


def load_pretrained(name: str, path: str, **options) -> Pretrained:
  """`import_state_dict` of the weight file (or cache directory) `path`."""
  twin = twin_of(name)
  resolved = files.resolve_weight_file(path, twin.name)
  state = files.read_state_dict(resolved)
  return import_state_dict(name, state, source=f"'{resolved}'", **options)


def create_model(name: str, *, pretrained: str | None = None,
                 num_classes: int | None = None, features_only: bool = False,
                 out_indices=None, rng: int = 0, input_shape=None,
                 **overrides) -> tuple[nn.Module, dict]:
  """(model, variables) of cnnjax model `name`, timm-style.

  pretrained: a weight file (or a directory holding one) of the model's
    torchvision/timm twin; None gives freshly initialized variables.
  num_classes: the classifier's classes (None: the file's, or the model's
    default); a count other than the file's re-initializes the classifier.
  features_only, out_indices: a backbone returning the chosen stages' maps
    (`model.feature_info` describes them).
  """
  shape = _input_shape(name, input_shape)
  if pretrained is not None:
    loaded = load_pretrained(name, pretrained, num_classes=num_classes, rng=rng,
                             input_shape=shape, **overrides)
    model, variables, fields = loaded.model, loaded.variables, loaded.fields
  else:
    fields = dict(overrides)
    if num_classes is not None:
      fields["num_classes"] = num_classes
    model = models.create_model(name, **fields)
    variables = random_ops.init(
        model, jax.random.key(rng),
        jnp.zeros((1, *shape), models.model_input_dtype(name)), train=False)
  if not features_only:
    return model, variables
  backbone = models.create_model(name, features_only=True, out_indices=out_indices,
                                 **{k: v for k, v in fields.items()
                                    if k != "num_classes"})
  x = jax.ShapeDtypeStruct((1, *shape), jnp.dtype(models.model_input_dtype(name)))
  return backbone, models.backbone_variables(variables, backbone, x)


def export_state_dict(name: str, variables, path: str | None = None
                      ) -> dict[str, np.ndarray]:
  """The twin's state dict of cnnjax variables; written to `path` (.safetensors
  or .pth) when given. It loads into the twin (`twin_of(name).builder()`)
  with strict=True."""
  state = variables_to_state_dict(name, variables)
  if path is not None:
    files.write_state_dict(state, path)
  return state
