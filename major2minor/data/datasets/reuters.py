"""``reuters``: Reuters-21578 R52 topic classification as binary bag-of-words.

Files under ``data.root``: ``r52-train.txt`` and ``r52-test.txt`` (Cardoso-Cachopo's names
``r52-train-all-terms.txt`` / ``r52-test-all-terms.txt`` also work), one document a line:
``topic<TAB>lower-cased text``.

* Classes: the topics with at least 5 test documents (36 of 52 on the real files), sorted by name;
  documents of the other topics are dropped from both files.
* Vocabulary: whitespace tokens of the kept training documents (the whole training file, before the
  validation hold-out) minus English stop words (scikit-learn's ``ENGLISH_STOP_WORDS``); the 999 most
  frequent by total count (ties: first occurrence in the file, as the reference code's stable sort)
  get slots 0-998, slot 999 is on when a document has any other non-stop word.  Inputs are binary
  {0, 1} float vectors of 1,000 dimensions, bounds [0, 1], no normalisation.
* Splits: a stratified 10% of the training file is validation (round(0.1 * n_c) documents of each
  class, drawn with the run's seed, never a class's last document), the rest training; the test
  file is the test split.  ``info['file_train_counts']`` holds the counts before the hold-out
  (6,436 documents, imbalance ratio 2,840 / 4 = 710 on the real files).
* Completeness: a file with fewer documents than the published one (6,532 train, 2,568 test: the
  ``documents`` declared at registration) is refused as truncated.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from major2minor.data.core import Augment, DataBundle
from major2minor.data.datasets._common import indices_info, select_train, split_of, stratified_holdout
from major2minor.data.io import DataFormatError, first_existing, missing, require_root
from major2minor.registry import DATASETS

FILES = {"train": ("r52-train.txt", "r52-train-all-terms.txt"), "test": ("r52-test.txt", "r52-test-all-terms.txt")}
HOW = (
    "Get the R52 files (Ana Cardoso-Cachopo's Reuters-21578 R52 preparation, or "
    "github.com/hendrycks/error-detection NLP/Categorization/data) and set data.root to their folder."
)
MIN_TEST_DOCS = 5
VOCAB_SIZE = 1000  # 999 words + 1 slot for every other word
VAL_FRACTION = 0.1


def read_docs(path: Path) -> Tuple[List[str], List[List[str]]]:
    """(topics, token lists) of a ``topic<TAB>text`` file."""
    topics, docs = [], []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            if "\t" not in line:
                raise DataFormatError(f"{path}, line {lineno}: expected `topic<TAB>text`, got {line[:60]!r}. " + HOW)
            topic, text = line.rstrip("\n").split("\t", 1)
            if not topic.strip():
                raise DataFormatError(f"{path}, line {lineno}: empty topic before the TAB. " + HOW)
            topics.append(topic.strip())
            docs.append(text.split())
    if not topics:
        raise DataFormatError(f"{path}: no `topic<TAB>text` lines found. " + HOW)
    return topics, docs


def build_vocabulary(docs: Sequence[Sequence[str]], stop_words, size: int = VOCAB_SIZE - 1) -> Dict[str, int]:
    counts: Counter = Counter()
    for doc in docs:
        counts.update(w for w in doc if w not in stop_words)
    # Counter keeps first-occurrence order; sorted() is stable, so ties stay in file order
    ranked = sorted(counts.items(), key=lambda kv: kv[1], reverse=True)[:size]
    return {w: i for i, (w, _) in enumerate(ranked)}


def bag_of_words(
    docs: Sequence[Sequence[str]], vocab: Dict[str, int], stop_words, dims: int = VOCAB_SIZE
) -> np.ndarray:
    """Binary (N, dims) vectors: slot vocab[w] for a vocabulary word, slot dims-1 for any other non-stop word
    (a vocabulary smaller than dims-1 words leaves the slots in between at 0)."""
    other = dims - 1
    x = np.zeros((len(docs), dims), dtype=np.float32)
    for i, doc in enumerate(docs):
        for w in doc:
            if w in stop_words:
                continue
            x[i, vocab.get(w, other)] = 1.0
    return x


def check_complete(path: Path, split: str, found: int, documented: Optional[Dict[str, int]]) -> None:
    """Refuse a file with fewer documents than the published R52 file of its split: a download or copy cut
    short would otherwise be trained on without a word (its last documents, often whole topics, missing).

    The published sizes are declared where the data set is registered (``documents=``); both file names
    hold the same documents.  Only a shortfall is refused: a shortened file is never the real R52, while
    a deliberate smaller experiment keeps the whole file and picks its documents with ``data.profile`` and
    ``data.n_max``.
    """
    expected = (documented or {}).get(split)
    if expected is not None and found < expected:
        raise DataFormatError(
            f"{path} holds {found:,} documents but the R52 {split} file has {expected:,}: it looks truncated "
            "(a download or copy cut short). Get the file again; to train on fewer documents keep the whole "
            "file and pick them with data.profile=longtail data.n_max=N. " + HOW
        )


def find_files(root: Path) -> Dict[str, Path]:
    found = {}
    for split, names in FILES.items():
        path = first_existing([root / n for n in names])
        if path is None:
            raise missing(root / names[0], f"the R52 {split} file ({' or '.join(names)}: `topic<TAB>text` lines)", HOW)
        found[split] = path
    return found


@DATASETS.register("reuters", documents={"train": 6532, "test": 2568})  # the published files' sizes
def build_reuters(cfg, seed: int = 0) -> DataBundle:
    """Reuters R52, topics with >= 5 test docs (36); 1,000-d binary bag-of-words; 10% stratified val."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    root = require_root(cfg.root, "reuters", "r52-train.txt and r52-test.txt", HOW)
    files = find_files(root)
    train_topics, train_docs = read_docs(files["train"])
    test_topics, test_docs = read_docs(files["test"])
    documented = DATASETS.entry("reuters").info.documents
    check_complete(files["train"], "train", len(train_topics), documented)
    check_complete(files["test"], "test", len(test_topics), documented)
    test_counts = Counter(test_topics)
    train_set = set(train_topics)
    classes = sorted(t for t, n in test_counts.items() if n >= MIN_TEST_DOCS and t in train_set)
    if len(classes) < 2:
        raise DataFormatError(
            f"{files['test']}: fewer than 2 topics have >= {MIN_TEST_DOCS} test documents "
            "and training documents. " + HOW
        )
    class_id = {t: i for i, t in enumerate(classes)}
    keep_train = [i for i, t in enumerate(train_topics) if t in class_id]
    keep_test = [i for i, t in enumerate(test_topics) if t in class_id]
    docs = [train_docs[i] for i in keep_train]
    y_file = np.asarray([class_id[train_topics[i]] for i in keep_train], dtype=np.int64)
    y_test = np.asarray([class_id[test_topics[i]] for i in keep_test], dtype=np.int64)

    vocab = build_vocabulary(docs, ENGLISH_STOP_WORDS)
    x_file = bag_of_words(docs, vocab, ENGLISH_STOP_WORDS)
    x_test = bag_of_words([test_docs[i] for i in keep_test], vocab, ENGLISH_STOP_WORDS)

    frac = VAL_FRACTION
    val_idx, pool = stratified_holdout(y_file, frac, len(classes), seed)
    train_idx = pool[select_train(y_file[pool], len(classes), cfg, seed, "reuters", class_names=classes)]
    file_counts = np.bincount(y_file, minlength=len(classes)).tolist()
    return DataBundle(
        name="reuters",
        train=split_of(x_file, y_file, train_idx),
        val=split_of(x_file, y_file, val_idx),
        test=split_of(x_test, y_test),
        num_classes=len(classes),
        class_names=classes,
        bounds=(0.0, 1.0),
        mean=None,
        std=None,
        augment=Augment(),
        info={
            "source": str(root),
            "files": {k: str(v) for k, v in files.items()},
            "vocabulary": [w for w, _ in sorted(vocab.items(), key=lambda kv: kv[1])],
            "dropped_topics": sorted((set(train_topics) | set(test_topics)) - set(classes)),
            "file_train_documents": int(len(y_file)),
            "file_train_counts": file_counts,
            "file_imbalance_ratio": max(file_counts) / max(min(file_counts), 1),
            "val_fraction": frac,
            "profile": cfg.profile,
            "indices": indices_info(train=np.asarray(keep_train)[train_idx], val=np.asarray(keep_train)[val_idx]),
            "indices_refer_to": "lines of the training file (non-empty lines, 0-based)",
        },
    )
