"""``twitter-pos``: token-level part-of-speech tagging of tweets (Gimpel et al., 2011), one token a sample.

Files under ``data.root`` (or ``ROOT/Tweets``): ``tweets-train.txt``, ``tweets-dev.txt`` and
``tweets-devtest.txt`` (the CMU ARK names ``oct27.train``/``oct27.dev``/``oct27.test`` also work),
UTF-8 text, one ``token<TAB>tag`` a line, a blank line between tweets (a file that is not UTF-8 is
refused, naming the line and byte offset of the first bad byte).  Splits: train file -> train, dev file ->
validation, devtest file -> test.  Classes: the tags that occur in both the training and the test
file (the two tags without test tokens, ``M`` and ``Y``, are dropped with their tokens: 23 classes,
14,614 training tokens on the real files), sorted by tag.

Inputs: one 50-dimensional vector per token, no bounds (M2m's translation is not clamped).

* ``data.embeddings=FILE``: a ``word v1 ... vD`` UTF-8 text file (GloVe/word2vec text format; a
  leading ``count dim`` line is skipped).  A stray non-UTF-8 byte inside a word is tolerated (that word
  then matches no token); a UTF-16/32 file or one whose numbers are not text (a binary word2vec
  ``.bin``) is refused, naming the line.  A token is looked up as is, then lower-cased; a token found in
  neither way gets the file's unknown-word vector (``UUUNKKK``, ``<unk>``, ``<UNK>``, ``UNK`` or
  ``unk``) if it has one, else zeros.  The file's coverage is recorded in the manifest.
* Without a file, a deterministic fallback computed from the training split only:
  dimensions 0-39 are distributional, from word co-occurrence in the training tweets (window of
  2 tokens each side, tweet boundaries as context ``<s>``/``</s>``, contexts restricted to the 1,000
  most frequent training tokens): positive PMI, truncated SVD (U * sqrt(S), computed via the
  contexts' Gram matrix; each component's sign fixed so that its largest-magnitude entry is
  positive), rows scaled to unit length.  Tokens never seen in training get zeros there.
  (Deterministic for given files and library versions; the eigen-solver's last bits may differ
  across BLAS builds, so ``info['embedding_checksum']`` identifies the exact vectors used.)
  Dimensions 40-49 are orthographic indicators computed from the token itself: at-mention,
  hashtag, URL, number, punctuation only, contains a digit, contains an apostrophe,
  emoticon-like, non-ASCII, longer than 6 characters.

Unlike the reference code (Hendrycks & Gimpel), which concatenates the vectors of a window of
three tokens (150 dims), each token is one 50-d vector, as the M2m paper describes.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from major2minor.data.core import Augment, DataBundle
from major2minor.data.datasets._common import indices_info, select_train, split_of
from major2minor.data.io import DataFormatError, first_existing, missing, require_root
from major2minor.registry import DATASETS

FILES = {
    "train": ("tweets-train.txt", "oct27.train"),
    "val": ("tweets-dev.txt", "oct27.dev"),
    "test": ("tweets-devtest.txt", "oct27.test"),
}
HOW = (
    "Get the Twitter POS data (CMU ARK TweetNLP twpos-data-v0.3, oct27 portion, or the copy in "
    "github.com/hendrycks/error-detection NLP/POS/data/Tweets) and set data.root to its folder."
)
FORMAT = "UTF-8 text, one `token<TAB>tag` a line, a blank line between tweets"
DIM = 50
FALLBACK_SVD_DIMS = 40
FALLBACK_CONTEXTS = 1000
FALLBACK_WINDOW = 2
UNKNOWN_KEYS = ("UUUNKKK", "<unk>", "<UNK>", "UNK", "unk")
EMBEDDINGS_FORMAT = (
    "data.embeddings must be a UTF-8 text word-vector file, `word v1 ... vD` a line (GloVe / word2vec text format)"
)
BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)

Tweet = List[Tuple[str, str]]


def not_utf8(path: Path, exc: UnicodeDecodeError, expected: str, how: str) -> DataFormatError:
    """The error for a file that is not UTF-8 text, with the line and byte offset of the first bad byte.

    Called only once decoding has failed, so reading the file again as bytes costs nothing on good files;
    the position lets the user look at the damage (``xxd -s OFFSET``) instead of guessing.
    """
    where = ""
    try:
        data = Path(path).read_bytes()
        data.decode("utf-8")
    except UnicodeDecodeError as again:
        bad, line = data[again.start : again.start + 4], data.count(b"\n", 0, again.start) + 1
        where = f", line {line} (byte offset {again.start}: {bad!r})"
    except OSError:
        pass
    return DataFormatError(
        f"{path}{where}: not UTF-8 text ({exc.reason}); expected {expected}. The file is "
        f"garbled or in another encoding: re-save it as UTF-8 or fetch the original again. {how}"
    )


def read_tweets(path: Path) -> List[Tweet]:
    """Tweets as lists of (token, tag); blank lines separate tweets."""
    tweets: List[Tweet] = []
    current: Tweet = []
    with open(path, encoding="utf-8") as fh:
        try:
            for lineno, line in enumerate(fh, 1):
                line = line.rstrip("\n").rstrip("\r")
                if not line.strip():
                    if current:
                        tweets.append(current)
                        current = []
                    continue
                parts = line.split("\t")
                if len(parts) != 2 or not parts[0] or not parts[1]:
                    raise DataFormatError(f"{path}, line {lineno}: expected `token<TAB>tag`, got {line!r}. " + HOW)
                current.append((parts[0], parts[1]))
        except UnicodeDecodeError as exc:
            raise not_utf8(path, exc, f"the Twitter POS format ({FORMAT})", HOW) from None
    if current:
        tweets.append(current)
    if not tweets:
        raise DataFormatError(f"{path}: no `token<TAB>tag` lines found. " + HOW)
    return tweets


def find_files(root: Path) -> Dict[str, Path]:
    base = root / "Tweets" if (root / "Tweets").is_dir() and not (root / FILES["train"][0]).exists() else root
    found = {}
    for split, names in FILES.items():
        path = first_existing([base / n for n in names])
        if path is None:
            raise missing(
                base / names[0],
                f"the Twitter POS {split} file ({' or '.join(names)}: "
                "`token<TAB>tag` lines, a blank line between tweets)",
                HOW,
            )
        found[split] = path
    return found


# ----------------------------------------------------------------------------------------------
# embeddings


def read_embeddings(path: Path) -> Tuple[Dict[str, np.ndarray], int]:
    """``word v1 ... vD`` lines -> ({word: vector}, D); a leading ``count dim`` header is skipped."""
    path = Path(path).expanduser()
    if not path.exists():
        raise missing(
            path,
            "a word-vector text file (`word v1 ... v50` per line)",
            "Fix data.embeddings, or unset it to use the built-in fallback embeddings.",
        )
    with open(path, "rb") as fh:
        head = fh.read(4)
    bom = next(((mark, name) for mark, name in BOMS if head.startswith(mark)), None)
    if bom:
        raise DataFormatError(
            f"{path}: a {bom[1]} text file (it starts with the byte-order mark {bom[0]!r}); "
            f"{EMBEDDINGS_FORMAT}. Re-save it as UTF-8."
        )
    vectors: Dict[str, np.ndarray] = {}
    dim = None
    garbled = 0
    # errors="replace": a stray non-UTF-8 byte inside a word (common in web-crawled vector files) only
    # makes that word unmatchable; bytes that are not text where numbers belong are refused below.
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            bad_bytes = "\ufffd" in line or "\x00" in line
            garbled += bad_bytes
            parts = line.rstrip("\n").rstrip(" ").split(" ")
            if len(parts) <= 1 or (lineno == 1 and len(parts) == 2 and all(p.isdigit() for p in parts)):
                continue
            try:
                vec = np.asarray(parts[1:], dtype=np.float32)
            except ValueError:
                if bad_bytes:
                    raise DataFormatError(
                        f"{path}, line {lineno}: not UTF-8 text (bytes that do not decode where "
                        f"the numbers belong); {EMBEDDINGS_FORMAT}. A binary file (word2vec .bin) "
                        "must be converted to text first."
                    ) from None
                raise DataFormatError(
                    f"{path}, line {lineno}: expected `word v1 ... vD` with numbers after the "
                    f"word, got {line[:60]!r}. data.embeddings must be a text word-vector "
                    "file (GloVe / word2vec text format)."
                ) from None
            if dim is None:
                dim = len(vec)
            elif len(vec) != dim:
                raise DataFormatError(
                    f"{path}, line {lineno}: {len(vec)} values, but earlier lines have {dim}; "
                    "every line must have the same number of values."
                )
            vectors.setdefault(parts[0], vec)
    if not vectors:
        raise DataFormatError(
            f"{path}: no `word v1 ... vD` lines found"
            + (f" ({garbled} line(s) are not UTF-8 text)" if garbled else "")
            + f"; {EMBEDDINGS_FORMAT}."
        )
    return vectors, int(dim)


def embed_with_file(tokens: Sequence[str], vectors: Dict[str, np.ndarray], dim: int) -> Tuple[np.ndarray, float]:
    """(N, dim) vectors and the fraction of tokens found (as is or lower-cased)."""
    unk = next((vectors[k] for k in UNKNOWN_KEYS if k in vectors), np.zeros(dim, dtype=np.float32))
    out = np.empty((len(tokens), dim), dtype=np.float32)
    found = 0
    for i, tok in enumerate(tokens):
        vec = vectors.get(tok)
        if vec is None:
            vec = vectors.get(tok.lower())
        if vec is None:
            vec = unk
        else:
            found += 1
        out[i] = vec
    return out, found / max(len(tokens), 1)


_EMOTICON = re.compile(r"^[:;=8xX][-o^']?[()\[\]dDpP/\\|3*oO]+$|^<3+$|^[()\[\]dDpP/\\|][-o^']?[:;=]$")


def shape_features(token: str) -> np.ndarray:
    """The 10 orthographic indicators of the fallback embedding (see the module docstring)."""
    t = token
    return np.asarray(
        [
            t.startswith("@") or t.startswith("<@"),
            t.startswith("#") and len(t) > 1,
            t.lower().startswith(("http", "www.", "<url")),
            bool(re.fullmatch(r"[+-]?[\d.,:/]*\d[\d.,:/]*", t)),
            bool(re.fullmatch(r"[^\w\s]+", t)),
            any(ch.isdigit() for ch in t),
            "'" in t or "\u2019" in t,
            bool(_EMOTICON.match(t)),
            any(ord(ch) > 127 for ch in t),
            len(t) > 6,
        ],
        dtype=np.float32,
    )


def fallback_embeddings(train_tweets: Sequence[Sequence[str]]) -> Dict[str, np.ndarray]:
    """{training token: 40-d PPMI-SVD vector} from the training tweets only (see module docstring)."""
    from scipy import linalg, sparse
    from threadpoolctl import threadpool_limits

    freq = Counter(tok for tweet in train_tweets for tok in tweet)
    # ties broken by the token itself, so the result does not depend on file order subtleties
    vocab = sorted(freq, key=lambda w: (-freq[w], w))
    word_id = {w: i for i, w in enumerate(vocab)}
    contexts = ["<s>", "</s>"] + vocab[:FALLBACK_CONTEXTS]
    ctx_id = {w: i for i, w in enumerate(contexts)}
    counts = np.zeros((len(vocab), len(contexts)), dtype=np.float64)
    for tweet in train_tweets:
        padded = ["<s>"] * FALLBACK_WINDOW + list(tweet) + ["</s>"] * FALLBACK_WINDOW
        for i in range(FALLBACK_WINDOW, len(padded) - FALLBACK_WINDOW):
            row = word_id[padded[i]]
            for j in range(i - FALLBACK_WINDOW, i + FALLBACK_WINDOW + 1):
                if j != i and padded[j] in ctx_id:
                    counts[row, ctx_id[padded[j]]] += 1.0
    total = counts.sum()
    row_sum = counts.sum(1, keepdims=True)
    col_sum = counts.sum(0, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        pmi = np.log(counts * total / (row_sum * col_sum))
    ppmi = sparse.csr_matrix(np.where(np.isfinite(pmi) & (pmi > 0), pmi, 0.0))
    # Truncated SVD through the small (contexts x contexts) Gram matrix: M^T M = V S^2 V^T, and
    # U sqrt(S) = M V S^(-1/2).  Much cheaper than a full SVD of the (vocabulary x contexts) matrix.
    gram = (ppmi.T @ ppmi).toarray()
    k = min(FALLBACK_SVD_DIMS, gram.shape[0])
    with threadpool_limits(1):  # a small matrix: one BLAS thread is fastest and never oversubscribes
        evals, evecs = linalg.eigh(gram, subset_by_index=[gram.shape[0] - k, gram.shape[0] - 1])
    order = np.argsort(evals)[::-1]
    evals, evecs = np.clip(evals[order], 0.0, None), evecs[:, order]
    sing = np.sqrt(evals)
    emb = np.asarray(ppmi @ evecs) / np.sqrt(np.where(sing > 1e-12, sing, 1.0))
    signs = np.sign(emb[np.abs(emb).argmax(0), np.arange(k)])
    emb = emb * np.where(signs == 0, 1.0, signs)
    emb = np.pad(emb, ((0, 0), (0, FALLBACK_SVD_DIMS - k)))
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    emb = (emb / np.where(norms > 0, norms, 1.0)).astype(np.float32)
    return {w: emb[i] for i, w in enumerate(vocab)}


def embed_fallback(tokens: Sequence[str], table: Dict[str, np.ndarray]) -> Tuple[np.ndarray, float]:
    out = np.zeros((len(tokens), DIM), dtype=np.float32)
    found = 0
    for i, tok in enumerate(tokens):
        vec = table.get(tok)
        if vec is not None:
            out[i, :FALLBACK_SVD_DIMS] = vec
            found += 1
        out[i, FALLBACK_SVD_DIMS:] = shape_features(tok)
    return out, found / max(len(tokens), 1)


# ----------------------------------------------------------------------------------------------


def embedder(cfg, train_tweets):
    """The token -> vector function and its description: the word vectors of ``data.embeddings``, or the
    fallback built from the training split alone."""
    if cfg.embeddings:
        vectors, dim = read_embeddings(Path(cfg.embeddings))
        return (lambda toks: embed_with_file(toks, vectors, dim)), str(Path(cfg.embeddings).expanduser())
    table = fallback_embeddings([[tok for tok, _ in tw] for tw in train_tweets])
    return (
        lambda toks: embed_fallback(toks, table)
    ), "fallback: training-split PPMI-SVD (40) + orthographic indicators (10)"


@DATASETS.register("twitter-pos")
def build_twitter_pos(cfg, seed: int = 0) -> DataBundle:
    """Twitter POS tokens (23 tags); 50-d word vectors from data.embeddings or a training-split fallback."""
    root = require_root(cfg.root, "twitter-pos", "tweets-train.txt, tweets-dev.txt, tweets-devtest.txt", HOW)
    files = find_files(root)
    tweets = {split: read_tweets(path) for split, path in files.items()}
    tag_counts = {s: Counter(tag for tw in t for _, tag in tw) for s, t in tweets.items()}
    tags = sorted(t for t in tag_counts["train"] if t in tag_counts["test"])
    if len(tags) < 2:
        raise DataFormatError(
            f"{files['train']}: fewer than 2 tags occur in both the training and the test file. " + HOW
        )
    dropped = sorted((set(tag_counts["train"]) | set(tag_counts["val"]) | set(tag_counts["test"])) - set(tags))
    tag_id = {t: i for i, t in enumerate(tags)}

    embed, source = embedder(cfg, tweets["train"])
    arrays, coverage, kept_positions = {}, {}, {}
    for split, tws in tweets.items():
        pairs = [(tok, tag) for tw in tws for tok, tag in tw]
        keep = np.asarray([tag in tag_id for _, tag in pairs], dtype=bool)
        toks = [tok for (tok, _), k in zip(pairs, keep) if k]
        y = np.asarray([tag_id[tag] for (_, tag), k in zip(pairs, keep) if k], dtype=np.int64)
        x, coverage[split] = embed(toks)
        arrays[split] = (x, y)
        kept_positions[split] = np.flatnonzero(keep)

    x_train, y_train = arrays["train"]
    train_idx = select_train(y_train, len(tags), cfg, seed, "twitter-pos", class_names=tags)
    digest = hashlib.sha256(x_train.tobytes()).hexdigest()[:16]
    return DataBundle(
        name="twitter-pos",
        train=split_of(x_train, y_train, train_idx),
        val=split_of(*arrays["val"]),
        test=split_of(*arrays["test"]),
        num_classes=len(tags),
        class_names=tags,
        bounds=None,
        mean=None,
        std=None,
        augment=Augment(),
        info={
            "source": str(root),
            "files": {k: str(v) for k, v in files.items()},
            "embeddings": source,
            "embedding_dim": int(x_train.shape[1]),
            "embedding_checksum": digest,
            "coverage": {k: round(v, 4) for k, v in coverage.items()},
            "dropped_tags": dropped,
            "dropped_tokens": {s: int(sum(c[t] for t in dropped)) for s, c in tag_counts.items()},
            "profile": cfg.profile,
            "indices": indices_info(train=kept_positions["train"][train_idx]),
            "indices_refer_to": "train: token positions in the training file, blank lines not counted",
        },
    )
