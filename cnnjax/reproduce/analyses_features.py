"""Analysis 'handcrafted_features': hand-crafted against learned features.

The material's comparison ("hand-crafted features: HOG, SIFT, ...; learned
features: hidden states of DNN"), measured on a row's trained CNN runs. The
same two classifiers (scikit-learn: a logistic regression, 'linear', and an
SVM with an RBF kernel, 'rbf_svm', each after standardizing every feature)
are fitted on the training split's features and scored on the test split
for every feature set:

- the hand-crafted ones of `analysis.handcrafted` ('pixels', 'sobel',
  'robinson', 'hog'), computed on the run's model inputs (its own
  normalization);
- 'cnn_features': the run's penultimate layer (the input of its classifier
  layer `head`, flattened).

Figures per row: '<features>/<classifier>' test accuracies, 'cnn/end_to_end'
(the run's own softmax on the same test examples), 'handcrafted/best_linear'
and 'handcrafted/best_rbf_svm' (the best hand-crafted set) and
'learned_minus_handcrafted/linear' and '.../rbf_svm'. The CNN figures are
means over the row's seeds; the hand-crafted ones depend on the data only and
are fitted once per row, on its first seed's splits. At most MAX_TRAIN
training and MAX_TEST test examples are used (a fixed random subset; an RBF
SVM costs the square of its training set): the digits fit whole.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.analysis import handcrafted
from cnnjax.errors import CnnjaxError
from cnnjax.reproduce.analyses import ANALYSES, Figures, Runs
from cnnjax.runs import Run, inference

MAX_TRAIN = 5000
MAX_TEST = 2000
CLASSIFIERS = ("linear", "rbf_svm")
HEAD = "head"


def _sklearn():
  try:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC
  except ImportError as e:
    raise CnnjaxError("analysis 'handcrafted_features' needs scikit-learn "
                      "(pip install 'cnnjax[features]')") from e
  return {"linear": lambda: make_pipeline(StandardScaler(),
                                          LogisticRegression(max_iter=2000)),
          "rbf_svm": lambda: make_pipeline(StandardScaler(),
                                           SVC(kernel="rbf", gamma="scale"))}


def classifier_accuracies(train_x, train_y, test_x, test_y) -> dict[str, float]:
  """{classifier: test accuracy} of each of CLASSIFIERS fitted on the train set."""
  makers = _sklearn()
  out = {}
  for name in CLASSIFIERS:
    model = makers[name]().fit(np.asarray(train_x, np.float64), np.asarray(train_y))
    out[name] = float(np.mean(model.predict(np.asarray(test_x, np.float64))
                              == np.asarray(test_y)))
  return out


def penultimate(trained, inputs, *, batch_size: int = 512) -> np.ndarray:
  """(N, F): what the run's classifier layer `head` receives, flattened, for
  model inputs (N, ...), in evaluation mode."""
  def features(variables, x):
    seen = []

    def intercept(next_fun, args, kwargs, context):
      if (context.method_name == "__call__" and not seen
          and tuple(context.module.path) == (HEAD,)):
        seen.append(args[0])
      return next_fun(*args, **kwargs)

    with nn.intercept_methods(intercept):
      trained.with_variables(variables).logits(x)
    if not seen:
      raise CnnjaxError(f"model '{trained.config.model.name}' has no classifier "
                        f"layer '{HEAD}' whose input would be its features")
    return seen[0].reshape(x.shape[0], -1).astype(jnp.float32)

  fn = jax.jit(features)
  return np.asarray(inference.map_batches(lambda chunk: fn(trained.variables, chunk),
                                          (np.asarray(inputs),), batch_size))


def _subset(n: int, limit: int, seed: int) -> np.ndarray:
  if n <= limit:
    return np.arange(n)
  return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def _splits(trained, max_train: int, max_test: int) -> dict[str, Any]:
  """The (subsets of the) train and test splits: raw, model inputs, labels."""
  data = trained.dataset
  out = {}
  for part, name, limit in (("train", data.train_split, max_train),
                            ("test", trained.eval_split, max_test)):
    split = data.splits[name]
    rows = _subset(len(split["label"]), limit, seed=0 if part == "train" else 1)
    raw = np.asarray(split["image"][rows])
    out[part] = {"raw": raw, "label": np.asarray(split["label"][rows]),
                 "inputs": np.asarray(trained.normalize(raw), np.float32)}
  return out


def handcrafted_figures(data: dict[str, Any]) -> dict[str, float]:
  """'<kind>/<classifier>' for every hand-crafted feature kind."""
  size = min(data["train"]["inputs"].shape[1:3])
  hog_cell = 4 if size >= 12 else 2
  figures = {}
  for kind in handcrafted.FEATURE_KINDS:
    x = {part: handcrafted.feature_vectors(data[part]["inputs"], kind,
                                           hog_cell=hog_cell)
         for part in ("train", "test")}
    scores = classifier_accuracies(x["train"], data["train"]["label"],
                                   x["test"], data["test"]["label"])
    figures.update({f"{kind}/{c}": v for c, v in scores.items()})
  return figures


def learned_figures(trained, data: dict[str, Any]) -> dict[str, float]:
  """'cnn_features/<classifier>' and 'cnn/end_to_end' of one trained run."""
  x = {part: penultimate(trained, data[part]["inputs"]) for part in ("train", "test")}
  scores = classifier_accuracies(x["train"], data["train"]["label"],
                                 x["test"], data["test"]["label"])
  figures = {f"cnn_features/{c}": v for c, v in scores.items()}
  probabilities = trained.probabilities(data["test"]["raw"])
  figures["cnn/end_to_end"] = float(np.mean(np.argmax(probabilities, -1)
                                            == data["test"]["label"]))
  return figures


def _trained(workdir: str):
  trained = Run.open(workdir).trained()
  if trained.dataset.task not in ("multiclass", "ordinal"):
    raise CnnjaxError(f"analysis 'handcrafted_features' scores single-label "
                      f"classification; the run in '{workdir}' has a "
                      f"{trained.dataset.task} dataset")
  if len(trained.input_shape) != 3 or trained.dataset.input_key != "image":
    raise CnnjaxError(f"analysis 'handcrafted_features' needs 2D images; the run "
                      f"in '{workdir}' has inputs of shape {trained.input_shape}")
  return trained


@ANALYSES.register("handcrafted_features")
def handcrafted_features(runs: Runs, *, max_train: int = MAX_TRAIN,
                         max_test: int = MAX_TEST) -> Figures:
  """Test accuracies of classifiers on hand-crafted and learned features."""
  groups: dict[str, list[dict[str, Any]]] = {}
  for run in runs:
    groups.setdefault(run["slug"], []).append(run)
  figures = {}
  for slug, group in groups.items():
    group = sorted(group, key=lambda r: r["seed"])
    per_seed = []
    row: dict[str, float] = {}
    for i, entry in enumerate(group):
      trained = _trained(entry["workdir"])
      data = _splits(trained, max_train, max_test)
      if i == 0:
        row.update(handcrafted_figures(data))
      per_seed.append(learned_figures(trained, data))
    row.update({k: float(np.mean([s[k] for s in per_seed])) for k in per_seed[0]})
    for c in CLASSIFIERS:
      best = max(row[f"{kind}/{c}"] for kind in handcrafted.FEATURE_KINDS
                 if kind != "pixels")
      row[f"handcrafted/best_{c}"] = best
      row[f"learned_minus_handcrafted/{c}"] = row[f"cnn_features/{c}"] - best
    figures[slug] = row
  return figures
