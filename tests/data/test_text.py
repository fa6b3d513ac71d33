"""Sentence data for the text CNN: Kim's cleaning, vocabulary, folds, loaders."""

import ml_collections
import numpy as np
import pytest

from cnnjax.data.text import (Vocabulary, clean_str, kfold_assignments,
                              load_mr, load_text_file, tokenize)
from cnnjax.errors import CnnjaxError


def _cfg(**kw):
  return ml_collections.ConfigDict(kw)


# Expected outputs worked out from the regexes of Kim's process_data.py (and
# checked against them): his replacements for ( ) ? keep a backslash.
@pytest.mark.parametrize("text, expected", [
    ("Can't stop, won't stop!", "ca n't stop , wo n't stop !"),
    ("it's   the (best) film?", "it 's the \\( best \\) film \\?"),
    ("I'd've  said `no'", "i 'd 've said `no'"),
    ("They're here... aren't they?!", "they 're here are n't they \\? !"),
    ("We'll see, y'all.", "we 'll see , y'all"),
    ('He said "no" -- twice; (really)!', "he said no twice \\( really \\) !"),
    ("  Tabs\tand\nnewlines  ", "tabs and newlines"),
    ("Émile's café", "mile 's caf"),  # Non-ASCII letters become spaces.
    ("", ""),
])
def test_clean_str_reproduces_kims_cleaning(text, expected):
  assert clean_str(text) == expected


def test_clean_str_keeps_case_for_trec_and_tokenize_splits():
  assert clean_str("What's NASA's budget?", trec=True) == "What 's NASA 's budget \\?"
  assert clean_str("What's NASA's budget?") == "what 's nasa 's budget \\?"
  assert tokenize("It's OK (mostly).") == ["it", "'s", "ok", "\\(", "mostly", "\\)"]


def test_vocabulary_orders_by_count_then_alphabet_and_drops_rare_words():
  # Counts: a 3, c 2, then 'ba', 'ab', 'e' once each (first seen in that order).
  sentences = [["ba", "a", "c", "a"], ["c", "ab", "a"], ["e"]]
  vocab = Vocabulary(sentences)
  assert vocab.words == ["<pad>", "<unk>", "a", "c", "ab", "ba", "e"]
  assert len(vocab) == 7 and vocab["c"] == 3 and vocab["nope"] == 1
  rare = Vocabulary(sentences, min_count=2)
  assert rare.words == ["<pad>", "<unk>", "a", "c"]
  assert "ba" not in rare and rare["ba"] == 1
  assert Vocabulary.from_words(vocab.words).words == vocab.words
  with pytest.raises(CnnjaxError, match="must start with"):
    Vocabulary.from_words(["a", "b"])


def test_encode_pads_both_ends_and_truncates():
  vocab = Vocabulary([["a", "a", "c", "b"]])  # a=2, b=3, c=4
  ids = vocab.encode(["a", "b", "zzz"], max_length=5, pad=2)
  assert ids.dtype == np.int32
  np.testing.assert_array_equal(ids, [0, 0, 2, 3, 1, 0, 0, 0, 0])
  np.testing.assert_array_equal(vocab.encode(["a", "c", "a", "b"], 2, pad=1), [0, 2, 4, 0])
  np.testing.assert_array_equal(vocab.encode(["c", "b"], 3, pad=0), [4, 3, 0])
  assert vocab.encode([], 3).tolist() == [0] * 11  # Kim's default: 4 each end.
  many = vocab.encode_many([["a"], ["b", "c"]], 2, pad=1)
  np.testing.assert_array_equal(many, [[0, 2, 0, 0], [0, 3, 4, 0]])
  assert vocab.decode(many[1]) == ["b", "c"]


def test_folds_are_balanced_deterministic_and_partition_the_data():
  folds = kfold_assignments(23, num_folds=5, seed=3)
  assert folds.shape == (23,)
  assert sorted(np.bincount(folds, minlength=5).tolist()) == [4, 4, 5, 5, 5]
  np.testing.assert_array_equal(folds, kfold_assignments(23, num_folds=5, seed=3))
  assert not np.array_equal(folds, kfold_assignments(23, num_folds=5, seed=4))
  # Across the k folds every example is tested exactly once.
  tested = np.zeros(23, int)
  for fold in range(5):
    tested[folds == fold] += 1
  assert (tested == 1).all()
  with pytest.raises(CnnjaxError, match="cannot fill"):
    kfold_assignments(3, num_folds=5)
  with pytest.raises(CnnjaxError, match="at least 2"):
    kfold_assignments(10, num_folds=1)


def test_stratified_folds_share_out_every_class():
  labels = np.array([0] * 13 + [1] * 7 + [2] * 5)
  folds = kfold_assignments(25, num_folds=4, seed=0, labels=labels)
  sizes = np.bincount(folds, minlength=4)
  assert sizes.max() - sizes.min() <= 1 and sizes.sum() == 25
  for label, count in ((0, 13), (1, 7), (2, 5)):
    per_fold = np.bincount(folds[labels == label], minlength=4)
    assert per_fold.sum() == count and per_fold.max() - per_fold.min() <= 1


# --------------------------------------------------------------------- MR --

def _write_mr(root, per_class=10):
  """rt-polarity files in Latin-1; sentence i of a class holds a word of its
  own (p3, n7, ...) so each sentence can be recognised after encoding."""
  root.mkdir(exist_ok=True)
  for name, tag in (("rt-polarity.pos", "p"), ("rt-polarity.neg", "n")):
    # 0xe9 is 'é' in Latin-1 and invalid UTF-8; 0x85 is NEL to Latin-1,
    # which must not split the line.
    lines = [f"the caf\xe9 film {tag}{i} is good , really ." for i in range(per_class)]
    lines[0] = f"the caf\xe9 film {tag}0 \x85 is good"
    (root / name).write_bytes("\n".join(lines).encode("latin-1") + b"\n")
  return root


def test_mr_loads_end_to_end(tmp_path):
  root = _write_mr(tmp_path / "mr")
  data = load_mr(_cfg(data_dir=str(root), num_folds=5, vocab_from="all"))
  assert data.name == "mr" and data.num_classes == 2 and data.task == "multiclass"
  assert data.num_examples("train") == 16 and data.num_examples("test") == 4
  assert sorted(data.splits["test"]["label"].tolist()) == [0, 0, 1, 1]  # Stratified.
  vocab = data.metadata["vocabulary"]
  assert data.model_fields == {"vocab_size": len(vocab)}
  # 'the caf film pN is good , really' (8 tokens) is the longest sentence.
  assert data.metadata["max_length"] == 8 and data.input_shape == (8 + 8,)
  assert data.metadata["fold"] == 0 and data.metadata["num_folds"] == 5
  assert "caf" in vocab and "caf\xe9" not in vocab
  tokens = np.concatenate([data.splits["train"]["tokens"], data.splits["test"]["tokens"]])
  assert tokens.dtype == np.int32
  assert (tokens[:, :4] == 0).all() and (tokens[:, -4:] == 0).all()
  sentences = {" ".join(Vocabulary.from_words(vocab).decode(row)) for row in tokens}
  assert "the caf film p0 is good" in sentences
  assert "the caf film n9 is good , really" in sentences
  assert len(sentences) == 20


def test_mr_fold_switching_gives_disjoint_test_sets(tmp_path):
  root = _write_mr(tmp_path / "mr")
  seen = []
  for fold in range(5):
    data = load_mr(_cfg(data_dir=str(root), num_folds=5, fold=fold, vocab_from="all"))
    vocab = Vocabulary.from_words(data.metadata["vocabulary"])
    seen += [" ".join(vocab.decode(row)) for row in data.splits["test"]["tokens"]]
  assert len(seen) == 20 and len(set(seen)) == 20


def test_mr_vocab_from_train_maps_test_only_words_to_unk(tmp_path):
  root = _write_mr(tmp_path / "mr")
  strict = load_mr(_cfg(data_dir=str(root), num_folds=5))
  kim = load_mr(_cfg(data_dir=str(root), num_folds=5, vocab_from="all"))
  # Each test sentence has exactly one word of its own: the unknown one.
  assert ((strict.splits["test"]["tokens"] == 1).sum(axis=1) == 1).all()
  assert not (strict.splits["train"]["tokens"] == 1).any()
  assert not (kim.splits["test"]["tokens"] == 1).any()
  assert kim.model_fields["vocab_size"] == strict.model_fields["vocab_size"] + 4


def test_mr_smoke_keeps_200_per_class(tmp_path):
  data = load_mr(_cfg(data_dir=str(_write_mr(tmp_path / "mr", per_class=230))), smoke=True)
  labels = np.concatenate([data.splits["train"]["label"], data.splits["test"]["label"]])
  assert np.bincount(labels).tolist() == [200, 200]
  assert data.num_examples("test") == 40


def test_mr_errors_name_the_missing_path(tmp_path):
  with pytest.raises(CnnjaxError, match="does not exist"):
    load_mr(_cfg(data_dir=str(tmp_path / "nowhere")))
  root = _write_mr(tmp_path / "mr")
  (root / "rt-polarity.neg").unlink()
  with pytest.raises(CnnjaxError, match="rt-polarity.neg is missing"):
    load_mr(_cfg(data_dir=str(root)))
  with pytest.raises(CnnjaxError, match="data_dir is not set"):
    load_mr(_cfg())
  with pytest.raises(CnnjaxError, match="fold must be 0 to 9"):
    load_mr(_cfg(data_dir=str(root), fold=10))
  with pytest.raises(CnnjaxError, match="vocab_from"):
    load_mr(_cfg(data_dir=str(root), vocab_from="test"))


# -------------------------------------------------------------- text file --

def _write(path, text, encoding="utf-8"):
  path.write_bytes(text.encode(encoding))
  return path


def test_text_file_with_integer_labels_is_split_into_folds(tmp_path):
  lines = [f"{i % 3} sentence number w{i} here" for i in range(12)]
  path = _write(tmp_path / "data.txt", "\n\n".join(lines) + "\n")  # Empty lines skipped.
  data = load_text_file(_cfg(data_dir=str(path), num_folds=4, fold=1))
  assert data.num_classes == 3 and "label_names" not in data.metadata
  assert data.num_examples("train") == 9 and data.num_examples("test") == 3
  assert sorted(data.splits["test"]["label"].tolist()) == [0, 1, 2]
  assert data.metadata["fold"] == 1 and data.metadata["max_length"] == 4


def test_text_file_with_string_labels_sorts_them(tmp_path):
  text = "pos great fun\nneg dull\nneutral  so so\npos loved it\nneg bad\nneutral fine\n"
  path = _write(tmp_path / "data.txt", text)
  data = load_text_file(_cfg(data_dir=str(path), num_folds=2, vocab_from="all"))
  assert data.metadata["label_names"] == ["neg", "neutral", "pos"]
  vocab = Vocabulary.from_words(data.metadata["vocabulary"])
  for split in data.splits.values():
    for row, label in zip(split["tokens"], split["label"]):
      words = vocab.decode(row)
      expected = {("great", "fun"): 2, ("dull",): 0, ("so", "so"): 1,
                  ("loved", "it"): 2, ("bad",): 0, ("fine",): 1}[tuple(words)]
      assert label == expected


def test_text_file_folder_with_train_dev_and_test(tmp_path):
  _write(tmp_path / "train.txt", "1 good film\r\n0 bad film\r\n1 nice\r\n0 awful caf\xe9\r\n",
         encoding="latin-1")  # Windows line ends, Latin-1 fallback.
  _write(tmp_path / "dev.txt", "1 good\n")
  _write(tmp_path / "test.txt", "0 bad unseen film\n1 nice film\n")
  data = load_text_file(_cfg(data_dir=str(tmp_path), pad=1))
  assert list(data.splits) == ["train", "validation", "test"]
  assert [data.num_examples(s) for s in data.splits] == [4, 1, 2]
  assert data.metadata["fold"] is None and data.metadata["max_length"] == 2
  vocab = Vocabulary.from_words(data.metadata["vocabulary"])
  assert vocab.words[2] == "film" and "caf" in vocab
  # 'unseen' becomes <unk>; 'film' is cut by max_length 2.
  np.testing.assert_array_equal(data.splits["test"]["tokens"][0],
                                [0, vocab["bad"], 1, 0])
  assert data.splits["test"]["label"].tolist() == [0, 1]
  assert data.metadata["truncated"]["test"] == 1


def test_text_file_without_test_file_uses_folds_and_keeps_dev(tmp_path):
  _write(tmp_path / "train.txt", "".join(f"{i % 2} word{i}\n" for i in range(10)))
  _write(tmp_path / "dev.txt", "1 word3\n")
  data = load_text_file(_cfg(data_dir=str(tmp_path), num_folds=5))
  assert [data.num_examples(s) for s in data.splits] == [8, 1, 2]
  assert data.metadata["num_folds"] == 5


@pytest.mark.parametrize("files, phrase", [
    ({}, "train.txt is missing"),
    ({"train.txt": "0 fine\n1\n"}, "line 2: label '1' has no text"),
    ({"train.txt": "a x\nb y\n", "test.txt": "c z\n"}, "label 'c' does not appear"),
    ({"train.txt": "\n  \n"}, "is empty"),
    ({"train.txt": "0 x\n2 y\n"}, "1 never appear"),
    ({"train.txt": "-1 x\n0 y\n"}, "-1 is negative"),
    ({"train.txt": "0 x\n0 y\n"}, "only the label '0'"),
])
def test_text_file_errors(tmp_path, files, phrase):
  for name, text in files.items():
    _write(tmp_path / name, text)
  with pytest.raises(CnnjaxError, match=phrase):
    load_text_file(_cfg(data_dir=str(tmp_path), num_folds=2))


def test_text_file_rejects_missing_and_binary_files(tmp_path):
  with pytest.raises(CnnjaxError, match="nowhere.txt does not exist"):
    load_text_file(_cfg(data_dir=str(tmp_path / "nowhere.txt")))
  path = _write(tmp_path / "utf16.txt", "0 hello\n1 world\n", encoding="utf-16")
  with pytest.raises(CnnjaxError, match="cannot be decoded"):
    load_text_file(_cfg(data_dir=str(path), num_folds=2))
