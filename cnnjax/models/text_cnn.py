"""Kim (2014), "Convolutional Neural Networks for Sentence Classification".

Tokens (B, L) int32 -> word vectors (B, L, 300) -> 1D convolutions of widths
3, 4 and 5 with 100 feature maps each ('VALID', ReLU) -> max over time ->
concatenation (B, 300) -> dropout 0.5 -> `head`. The four variants of the
paper (section 3.1) differ only in the word vectors:

  rand          randomly initialised, trained with the rest;
  static        pretrained (word2vec), kept fixed;
  non-static    pretrained, fine-tuned;
  multichannel  two copies of the pretrained vectors, one static and one
                fine-tuned; every filter is applied to both and the results
                added (section 2).

Pretrained vectors (word2vec cannot be downloaded here) are loaded by
replacing the embedding table parameter(s), of shape (vocab_size, embed_dim):

  params['embedding']['embedding']             rand, static, non-static
  params['embedding_static']['embedding']      multichannel, frozen copy
  params['embedding_nonstatic']['embedding']   multichannel, fine-tuned copy

`with_pretrained_embeddings(params, vectors)` does that for every table.

Token id 0 is padding (as in Kim's code, where sentences are zero-padded and
row 0 of the table is a zero vector, reset after every update): its word
vector is forced to zero, so padding positions contribute only the bias to a
convolution, and row 0 never receives a gradient.

The max-norm constraint on the classifier (||w||_2 <= 3 for each class's
weight vector, section 2.1) is a training option: `config.optimizer.max_norm
= 3.0` on the layers `config.optimizer.max_norm_layers = 'head'`
(`cnnjax.train.step.max_norm`, applied after every update).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax import layers
from cnnjax.errors import CnnjaxError
from cnnjax.models.registry import register_model

MODES = ("rand", "static", "non-static", "multichannel")


def kim_uniform(key, shape, dtype=jnp.float32):
  """U[-0.25, 0.25]: Kim's initialisation of word vectors not in word2vec,
  chosen so their variance is close to that of the pretrained ones."""
  return jax.random.uniform(key, shape, dtype, -0.25, 0.25)


class Embedding(nn.Module):
  """A lookup table (B, L) -> (B, L, features) whose `padding_idx` row is 0.

  The parameter is `embedding` of shape (num_embeddings, features), as in
  `nn.Embed`. The padding row is forced to zero by multiplying the looked-up
  vectors by a mask (ids != padding_idx), so whatever the table holds there
  (e.g. a loaded pretrained row) is ignored and gets no gradient.
  """
  num_embeddings: int
  features: int
  padding_idx: int | None = 0
  embedding_init: Callable[..., Any] = kim_uniform
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, ids):
    table = self.param("embedding", self.embedding_init,
                       (self.num_embeddings, self.features), self.param_dtype)
    x = jnp.take(table.astype(self.dtype), ids, axis=0)  # (B, L, features)
    if self.padding_idx is not None:
      x = x * (ids != self.padding_idx)[..., None].astype(self.dtype)
    return x


class KimCNN(nn.Module):
  """Kim's CNN for sentence classification (CNN-rand/static/non-static/
  multichannel; see the module docstring).

  Attributes:
    mode: 'rand', 'static', 'non-static' or 'multichannel'.
    vocab_size: rows of the embedding table, padding id 0 included (the MR
      vocabulary is about 18,765 words; 20,000 leaves room).
    embed_dim: 300, word2vec's size.
    filter_widths, num_filters: region sizes 3, 4, 5 with 100 maps each.
    padding_idx: the id whose vector is zero (None: no padding id).
    num_classes: 0 returns the concatenated max-pooled features (B, 300).
  """
  num_classes: int = 2
  mode: str = "rand"
  vocab_size: int = 20_000
  embed_dim: int = 300
  filter_widths: Sequence[int] = (3, 4, 5)
  num_filters: int = 100
  dropout_rate: float = 0.5
  padding_idx: int | None = 0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens, *, train: bool = False):
    if self.mode not in MODES:
      raise CnnjaxError(f"KimCNN mode must be one of {', '.join(MODES)}, got "
                        f"{self.mode!r}.")
    if not jnp.issubdtype(tokens.dtype, jnp.integer) or tokens.ndim != 2:
      raise CnnjaxError(f"KimCNN takes integer token ids of shape (B, L), got "
                        f"{tokens.dtype} {tokens.shape}.")
    embed = functools.partial(Embedding, self.vocab_size, self.embed_dim,
                              padding_idx=self.padding_idx, dtype=self.dtype,
                              param_dtype=self.param_dtype)
    conv = functools.partial(layers.Conv, self.num_filters, ndim=1,
                             padding="VALID", dtype=self.dtype,
                             param_dtype=self.param_dtype)
    act = nn.relu
    if self.mode == "multichannel":
      static = jax.lax.stop_gradient(embed(name="embedding_static")(tokens))
      tuned = embed(name="embedding_nonstatic")(tokens)
      # Every filter is applied to both channels and the results added
      # (Kim's eq. 2 with one w): by linearity that is the filter applied to
      # the sum of the two channels, with the bias added once.
      x = static + tuned  # (B, L, embed_dim)
    else:
      x = embed(name="embedding")(tokens)  # (B, L, embed_dim)
      if self.mode == "static":
        x = jax.lax.stop_gradient(x)  # Frozen: no gradient reaches the table.
    pooled = []
    for width in self.filter_widths:
      # (B, L - width + 1, num_filters): 'VALID', as Kim.
      h = act(conv(kernel_size=width, name=f"conv_w{width}")(x))
      # Max over time: one value per feature map, whatever the length.
      pooled.append(layers.GlobalMaxPool(name=f"maxpool_w{width}")(h))
    x = jnp.concatenate(pooled, axis=-1)  # (B, len(widths) * num_filters)
    if not self.num_classes:
      return x
    x = nn.Dropout(self.dropout_rate, deterministic=not train,
                   name="dropout")(x)
    return layers.classify(x, self.num_classes, dtype=self.dtype,
                           param_dtype=self.param_dtype)


def _replace(tree, path, value):
  """A copy of the nested dict `tree` with `tree[path]` set to `value`."""
  if not path:
    return value
  tree = dict(tree)
  tree[path[0]] = _replace(tree[path[0]], path[1:], value)
  return tree


def with_pretrained_embeddings(params, vectors):
  """`params` with every word-vector table replaced by `vectors`.

  `vectors` is (vocab_size, embed_dim), row i the vector of token id i (row
  0, the padding id, is ignored). For multichannel models both copies start
  from the same vectors, as in the paper.
  """
  names = [k for k in params if k in ("embedding", "embedding_static",
                                      "embedding_nonstatic")]
  if not names:
    raise CnnjaxError("the parameters have no embedding table to replace.")
  for name in names:
    table = params[name]["embedding"]
    if tuple(vectors.shape) != tuple(table.shape):
      raise CnnjaxError(f"pretrained vectors have shape {tuple(vectors.shape)}"
                        f" but the embedding table is {tuple(table.shape)}.")
    params = _replace(params, (name, "embedding"),
                      jnp.asarray(vectors, table.dtype))
  return params


# MR (movie reviews): at most 56 tokens per sentence after Kim's cleaning.
for _name, _mode in (("kim_cnn_rand", "rand"), ("kim_cnn_static", "static"),
                     ("kim_cnn_nonstatic", "non-static"),
                     ("kim_cnn_multichannel", "multichannel")):
  register_model(
      _name, input_shape=(56,), input_dtype="int32",
      description=f"Kim (2014) sentence CNN, CNN-{_mode}: widths 3/4/5 x 100")(
          functools.partial(KimCNN, mode=_mode))
