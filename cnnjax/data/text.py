"""Sentence-classification data for Kim's (2014) text CNN.

Sentences become rows of token ids (N, pad + max_length + pad) int32, where
id 0 is padding and id 1 the unknown word, ready for `KimCNN`
(cnnjax/models/text_cnn.py), whose `vocab_size` is `len(vocabulary)`.

Two sources:

  load_mr         Pang & Lee's movie-review polarity snippets (MR): the files
                  `rt-polarity.pos` and `rt-polarity.neg`, 5,331 each, with no
                  standard split, so the paper reports 10-fold cross-validation;
                  `fold` picks which tenth is the test split.
  load_text_file  a user's own `LABEL<whitespace>TEXT` lines, either one file
                  (k-fold like MR) or a folder with train.txt, and optionally
                  test.txt and dev.txt.

Text is cleaned and split by `clean_str`, which reproduces the cleaning of
Kim's `process_data.py` (yoonkim/CNN_sentence), quirks included.

Where the vocabulary comes from (`vocab_from`):

  'train'  only the training folds: a word seen only in the test fold becomes
           <unk>, so nothing about the test sentences leaks into the model's
           input space. The strict protocol, and the default.
  'all'    every sentence, test fold included: Kim's choice. Each test-only
           word gets its own row; with pretrained word2vec vectors
           (static/non-static/multichannel) that row holds the word's real
           vector, which helps; with random vectors (CNN-rand) it is a random
           vector that training never updates, so the choice matters little.
"""

from __future__ import annotations

import collections
import os
import re
from typing import Iterable, Sequence

import numpy as np

from cnnjax.data.arrays import ArrayDataset
from cnnjax.errors import CnnjaxError, DataMissingError

PAD = "<pad>"  # id 0: the zero vector of the embedding table.
UNK = "<unk>"  # id 1: words left out of the vocabulary.

# Kim's clean_str, in his order. The middle steps have literal patterns, so a
# plain replace does what his re.sub calls do. His replacements for '(', ')'
# and '?' are the Python literals " \( ", " \) " and " \? ", whose backslash
# re.sub keeps (an unknown escape), so those tokens come out as '\(', '\)'
# and '\?': we keep that, so the vocabulary matches his.
_NOT_KEPT = re.compile(r"[^A-Za-z0-9(),!?'`]")
_SPLITS = (("'s", " 's"), ("'ve", " 've"), ("n't", " n't"), ("'re", " 're"),
           ("'d", " 'd"), ("'ll", " 'll"), (",", " , "), ("!", " ! "),
           ("(", " \\( "), (")", " \\) "), ("?", " \\? "))
_SPACES = re.compile(r"\s{2,}")
_INTEGER = re.compile(r"[+-]?[0-9]+")

SPLIT_ORDER = ("train", "validation", "test")
SMOKE_MR_PER_CLASS = 200
SMOKE_TEXT_PER_FILE = 400


def clean_str(text: str, *, trec: bool = False) -> str:
  """Kim's cleaning: characters outside [A-Za-z0-9(),!?'`] become spaces,
  clitics ('s 've n't 're 'd 'll) and , ! ( ) ? are split off, runs of spaces
  collapse to one; lower-cased unless `trec` (TREC keeps its case).

  >>> print(clean_str("It's (not) bad, isn't it?"))
  it 's \\( not \\) bad , is n't it \\?
  """
  text = _NOT_KEPT.sub(" ", text)
  for old, new in _SPLITS:
    text = text.replace(old, new)
  text = _SPACES.sub(" ", text).strip()
  return text if trec else text.lower()


def tokenize(text: str) -> list[str]:
  """The tokens of `clean_str(text)`."""
  return clean_str(text).split()


class Vocabulary:
  """Words by id: 0 '<pad>', 1 '<unk>', then by descending count (ties in
  alphabetical order, so the ids are deterministic).

  Args:
    token_lists: the sentences, each a list of tokens, to count words in.
    min_count: words seen fewer times than this are left out (they encode
      as <unk>).
  """

  def __init__(self, token_lists: Iterable[Sequence[str]] = (), min_count: int = 1):
    if min_count < 1:
      raise CnnjaxError(f"min_count must be at least 1, got {min_count}")
    counts = collections.Counter()
    for tokens in token_lists:
      counts.update(tokens)
    for special in (PAD, UNK):
      counts.pop(special, None)
    kept = sorted((w for w, c in counts.items() if c >= min_count),
                  key=lambda w: (-counts[w], w))
    self.min_count = min_count
    self.counts = {w: counts[w] for w in kept}
    self.words = [PAD, UNK] + kept
    self.index = {w: i for i, w in enumerate(self.words)}

  @classmethod
  def from_words(cls, words: Sequence[str]) -> "Vocabulary":
    """The vocabulary whose id i is `words[i]` (e.g. metadata['vocabulary'])."""
    if list(words[:2]) != [PAD, UNK]:
      raise CnnjaxError(f"a vocabulary must start with '{PAD}' and '{UNK}', "
                        f"got {list(words[:2])}")
    vocab = cls()
    vocab.words = list(words)
    vocab.index = {w: i for i, w in enumerate(vocab.words)}
    vocab.counts = {}
    return vocab

  def __len__(self) -> int:
    return len(self.words)

  def __contains__(self, word: str) -> bool:
    return word in self.index

  def __getitem__(self, word: str) -> int:
    """The id of `word`, 1 (<unk>) if it is not in the vocabulary."""
    return self.index.get(word, 1)

  def encode(self, tokens: Sequence[str], max_length: int, pad: int = 4) -> np.ndarray:
    """(pad + max_length + pad,) int32: `pad` zeros, the ids of the first
    `max_length` tokens, then zeros. Kim pads filter_h - 1 = 4 zeros at each
    end, so the widest filter (5) sees every word at every position."""
    ids = np.zeros(max_length + 2 * pad, np.int32)
    kept = [self[t] for t in tokens[:max_length]]
    ids[pad:pad + len(kept)] = kept
    return ids

  def encode_many(self, token_lists: Sequence[Sequence[str]], max_length: int,
                  pad: int = 4) -> np.ndarray:
    """(N, pad + max_length + pad) int32, one `encode` row per sentence."""
    out = np.zeros((len(token_lists), max_length + 2 * pad), np.int32)
    for row, tokens in enumerate(token_lists):
      out[row] = self.encode(tokens, max_length, pad)
    return out

  def decode(self, ids: Iterable[int]) -> list[str]:
    """The words of `ids`, padding left out."""
    return [self.words[i] for i in ids if i != 0]


def kfold_assignments(n: int, num_folds: int = 10, seed: int = 0, *,
                      labels: np.ndarray | None = None) -> np.ndarray:
  """(n,) int fold ids in [0, num_folds): fold sizes differ by at most 1.

  The examples are shuffled (seeded) and dealt to the folds in turn. With
  `labels`, each class is shuffled and dealt in turn, the count carrying on
  from one class to the next, so every fold gets its share of each class
  (within 1) and the fold sizes still differ by at most 1.
  """
  if num_folds < 2:
    raise CnnjaxError(f"num_folds must be at least 2, got {num_folds}")
  if n < num_folds:
    raise CnnjaxError(f"{n} examples cannot fill {num_folds} folds; use fewer "
                      "folds or more data")
  rng = np.random.default_rng(seed)
  folds = np.empty(n, np.int64)
  if labels is None:
    folds[rng.permutation(n)] = np.arange(n) % num_folds
    return folds
  labels = np.asarray(labels)
  if labels.shape != (n,):
    raise CnnjaxError(f"kfold_assignments got {labels.shape} labels for {n} examples")
  dealt = 0
  for label in np.unique(labels):
    members = np.flatnonzero(labels == label)
    folds[rng.permutation(members)] = (dealt + np.arange(len(members))) % num_folds
    dealt += len(members)
  return folds


# ----------------------------------------------------------------- loaders --

def load_mr(dataset_config, *, smoke: bool = False) -> ArrayDataset:
  """MR: `data_dir` holds rt-polarity.pos (label 1) and rt-polarity.neg
  (label 0), one Latin-1 snippet per line.

  Options (dataset_config): fold (0), num_folds (10), split_seed (0),
  min_count (1), max_length (0: the longest training sentence), pad (4),
  vocab_from ('train' or 'all', see the module docstring). The folds are
  stratified by label. smoke: the first 200 snippets of each class.
  """
  options = text_options(dataset_config)
  data_dir = _data_dir(dataset_config, "the folder holding rt-polarity.pos "
                       "and rt-polarity.neg")
  if not os.path.isdir(data_dir):
    raise DataMissingError(f"MR data folder {data_dir} does not exist; set "
                      "dataset.data_dir to the folder holding rt-polarity.pos "
                      "and rt-polarity.neg")
  sentences, labels = [], []
  for filename, label in (("rt-polarity.pos", 1), ("rt-polarity.neg", 0)):
    path = os.path.join(data_dir, filename)
    if not os.path.isfile(path):
      raise DataMissingError(f"MR file {path} is missing; data_dir must hold "
                        "rt-polarity.pos and rt-polarity.neg")
    lines = [line for _, line in _read_lines(path)]
    if not lines:
      raise CnnjaxError(f"MR file {path} is empty")
    if smoke:
      lines = lines[:SMOKE_MR_PER_CLASS]
    sentences += [tokenize(line) for line in lines]
    labels += [label] * len(lines)
  labels = np.asarray(labels, np.int32)
  splits = _kfold_split(sentences, labels, options)
  return encode_dataset("mr", splits, 2, options, {})


def load_text_file(dataset_config, *, smoke: bool = False) -> ArrayDataset:
  """A user's labelled sentences, one `LABEL<whitespace>TEXT` per line.

  `data_dir` is one file (split into k folds like MR, the same options) or a
  folder with train.txt and optionally test.txt (else k folds of train.txt)
  and dev.txt (the 'validation' split). Files are read as UTF-8, or Latin-1
  when they are not valid UTF-8; empty lines are skipped. Labels that are all
  integers are used as they are (they must be 0 to K-1); otherwise the sorted
  distinct labels get ids 0 to K-1 (metadata['label_names']). Text is cleaned
  by `clean_str`, lower-cased unless `lowercase` is False.
  smoke: the first 400 examples of each file.
  """
  options = text_options(dataset_config)
  data_dir = _data_dir(dataset_config, "a LABEL<whitespace>TEXT file or a "
                       "folder with train.txt")
  if os.path.isfile(data_dir):
    files = {"train": data_dir}
  elif os.path.isdir(data_dir):
    files = {"train": os.path.join(data_dir, "train.txt")}
    if not os.path.isfile(files["train"]):
      raise DataMissingError(f"text data file {files['train']} is missing; a "
                        "data_dir folder needs train.txt (test.txt and dev.txt "
                        "are optional)")
    for split, filename in (("validation", "dev.txt"), ("test", "test.txt")):
      path = os.path.join(data_dir, filename)
      if os.path.isfile(path):
        files[split] = path
  else:
    raise DataMissingError(f"text data {data_dir} does not exist; set "
                      "dataset.data_dir to a LABEL<whitespace>TEXT file or a "
                      "folder with train.txt")

  examples = {split: _read_labelled(path) for split, path in files.items()}
  label_ids, num_classes, label_names = _label_mapping(examples, files)
  lowercase = bool(dataset_config.get("lowercase", True))

  read = {}
  for split, rows in examples.items():
    if smoke:
      rows = rows[:SMOKE_TEXT_PER_FILE]
    read[split] = ([clean_str(text, trec=not lowercase).split() for _, _, text in rows],
                   np.asarray([label_ids[raw] for _, raw, _ in rows], np.int32))
  if "test" in read:
    splits = read
    options["fold"] = options["num_folds"] = None
  else:
    splits = _kfold_split(*read.pop("train"), options)
    splits.update(read)
  metadata = {"files": files}
  if label_names:
    metadata["label_names"] = label_names
  return encode_dataset("text_file", splits, num_classes, options, metadata)


# ----------------------------------------------------------------- helpers --

def text_options(dataset_config) -> dict:
  options = {
      "fold": int(dataset_config.get("fold", 0)),
      "num_folds": int(dataset_config.get("num_folds", 10)),
      "split_seed": int(dataset_config.get("split_seed", 0)),
      "min_count": int(dataset_config.get("min_count", 1)),
      "max_length": int(dataset_config.get("max_length", 0)),
      "pad": int(dataset_config.get("pad", 4)),
      "vocab_from": str(dataset_config.get("vocab_from", "train")),
  }
  if options["num_folds"] < 2:
    raise CnnjaxError(f"dataset.num_folds must be at least 2, got {options['num_folds']}")
  if not 0 <= options["fold"] < options["num_folds"]:
    raise CnnjaxError(f"dataset.fold must be 0 to {options['num_folds'] - 1}, "
                      f"got {options['fold']}")
  if options["vocab_from"] not in ("train", "all"):
    raise CnnjaxError("dataset.vocab_from must be 'train' or 'all', got "
                      f"'{options['vocab_from']}'")
  for key, low in (("min_count", 1), ("max_length", 0), ("pad", 0)):
    if options[key] < low:
      raise CnnjaxError(f"dataset.{key} must be at least {low}, got {options[key]}")
  return options


def _data_dir(dataset_config, what: str) -> str:
  data_dir = dataset_config.get("data_dir", None)
  if not data_dir:
    raise DataMissingError(f"dataset.data_dir is not set; point it to {what}")
  return os.path.expanduser(str(data_dir))


def _read_lines(path: str) -> list[tuple[int, str]]:
  """(line number, stripped text) of the non-empty lines of `path`.

  UTF-8 first, Latin-1 when that fails (MR's files are Latin-1). Lines end
  at '\\n' only: MR holds byte 0x85, which Latin-1 reads as U+0085 (NEL),
  a line break to `str.splitlines` but not to Kim's byte-wise reading.
  """
  with open(path, "rb") as f:
    raw = f.read()
  if b"\x00" in raw:
    raise CnnjaxError(f"{path} cannot be decoded as text (it holds NUL bytes, "
                      "as binary or UTF-16 files do); save it as UTF-8")
  try:
    text = raw.decode("utf-8-sig")
  except UnicodeDecodeError:
    text = raw.decode("latin-1")
  lines = [(number, line.strip()) for number, line in enumerate(text.split("\n"), 1)]
  return [(number, line) for number, line in lines if line]


def _read_labelled(path: str) -> list[tuple[int, str, str]]:
  """(line number, label, text) of each example in `path`."""
  rows = []
  for number, line in _read_lines(path):
    parts = line.split(None, 1)
    if len(parts) < 2:
      raise CnnjaxError(f"{path}, line {number}: label '{parts[0]}' has no text "
                        "after it; each line must be LABEL<whitespace>TEXT")
    rows.append((number, parts[0], parts[1]))
  if not rows:
    raise CnnjaxError(f"{path} is empty; each line must be LABEL<whitespace>TEXT")
  return rows


def _label_mapping(examples, files):
  """({label as written: class id}, number of classes, label names or None
  for integer labels)."""
  integers = all(_INTEGER.fullmatch(raw) for rows in examples.values()
                 for _, raw, _ in rows)
  key = int if integers else str
  seen = {key(raw) for _, raw, _ in examples["train"]}
  for split, rows in examples.items():
    for number, raw, _ in rows:
      if key(raw) not in seen:
        raise CnnjaxError(f"{files[split]}, line {number}: label '{raw}' does "
                          f"not appear in {files['train']}; every label must "
                          "have training examples")
  if len(seen) < 2:
    raise CnnjaxError(f"{files['train']} has only the label "
                      f"'{next(iter(seen))}'; classification needs at least two")
  if integers:
    expected = set(range(max(seen) + 1))
    if min(seen) < 0 or seen != expected:
      missing = sorted(expected - seen)[:3]
      why = (f"{min(seen)} is negative" if min(seen) < 0
             else f"{', '.join(map(str, missing))} never appear")
      raise CnnjaxError(f"the integer labels of {files['train']} must be 0 to "
                        f"K-1 but {why}; renumber them or use label names")
    names = None
    class_of = {k: k for k in seen}
  else:
    names = sorted(seen)
    class_of = {name: i for i, name in enumerate(names)}
  ids = {raw: class_of[key(raw)] for rows in examples.values() for _, raw, _ in rows}
  return ids, len(class_of), names


def _kfold_split(sentences, labels, options) -> dict:
  """{'train': (token lists, labels), 'test': ...}: `fold` is the test split."""
  folds = kfold_assignments(len(labels), options["num_folds"],
                            options["split_seed"], labels=labels)
  is_test = folds == options["fold"]
  return {split: ([s for s, t in zip(sentences, is_test) if t == want], labels[is_test == want])
          for split, want in (("train", False), ("test", True))}


def encode_dataset(name, splits, num_classes, options, metadata) -> ArrayDataset:
  """Builds the vocabulary, encodes every split and wraps it up."""
  train_tokens = splits["train"][0]
  if options["vocab_from"] == "all":
    vocab_tokens = [s for tokens, _ in splits.values() for s in tokens]
  else:
    vocab_tokens = train_tokens
  vocab = Vocabulary(vocab_tokens, min_count=options["min_count"])
  max_length = options["max_length"] or max(1, max(map(len, train_tokens)))
  pad = options["pad"]
  ordered = sorted(splits, key=SPLIT_ORDER.index)
  arrays = {split: {"tokens": vocab.encode_many(splits[split][0], max_length, pad),
                    "label": np.asarray(splits[split][1], np.int32)}
            for split in ordered}
  metadata = dict(metadata)
  metadata.update(
      vocabulary=vocab.words, max_length=max_length, pad=pad,
      fold=options["fold"], num_folds=options["num_folds"],
      vocab_from=options["vocab_from"], min_count=options["min_count"],
      truncated={split: sum(len(s) > max_length for s in splits[split][0])
                 for split in ordered})
  return ArrayDataset(name=name, splits=arrays, num_classes=num_classes,
                      task="multiclass", model_fields={"vocab_size": len(vocab)},
                      metadata=metadata)
