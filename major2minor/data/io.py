"""Files on disk: clear errors, the decoded-array cache, image decoding, checksums and downloads.

* Missing or malformed data raise :class:`DataNotFoundError` (a ``FileNotFoundError``) or
  :class:`DataFormatError` (a ``ValueError``); the message names the path, what was expected there
  and how to get it, so the CLI prints one actionable line.
* Image data sets that need decoding (CelebA-5, SUN397, ImageNet-LT, image folders) decode once into
  a cache of uint8 arrays in a per-user folder (see :func:`cache_dir`: ``data.cache``, else
  ``$M2M_CACHE``, else ``$XDG_CACHE_HOME/major2minor`` or ``~/.cache/major2minor``), never inside the
  data folder, which may be read-only or shared.  The cache file name holds a hash of everything the
  arrays depend on (the files' names, sizes, modification/change times and a content sample, see
  :func:`file_signature`; image size, crop rule, format version), so an edited data folder is decoded
  again rather than served from a stale cache.  An unwritable cache folder only warns.
* Downloads happen only in ``m2m data prepare`` (never at import or test time) and are verified
  against MD5 checksums before use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.request
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from major2minor.memory import require

log = logging.getLogger("major2minor.data")

CACHE_FORMAT = 2  # bump when the decoding rules or the cache key change (2: content-keyed)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


class DataNotFoundError(FileNotFoundError):
    """A data file or folder is missing; the message names it, what belongs there, and how to get it."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class DataFormatError(ValueError):
    """A data file exists but does not have the expected format; the message says what was expected."""


def missing(path: os.PathLike | str, expected: str, how: str) -> DataNotFoundError:
    return DataNotFoundError(f"{path}: not found; expected {expected} there. {how}")


def require_root(root: Optional[str], dataset: str, expected: str, how: str) -> Path:
    """``data.root`` as an existing Path, or an error that says what to put there."""
    if root is None or str(root) == "":
        raise DataNotFoundError(
            f"data.root is not set for data.name={dataset}; set data.root=DIR, a folder holding {expected}. {how}"
        )
    path = Path(root).expanduser()
    if not path.exists():
        shown = path if path.is_absolute() else f"{path} (= {path.absolute()})"
        raise missing(shown, expected, how + " Or point data.root at the folder that holds them.")
    return path


def first_existing(candidates: Sequence[Path]) -> Optional[Path]:
    for c in candidates:
        if c.exists():
            return c
    return None


# ----------------------------------------------------------------------------------------------
# the decoded-array cache

CACHE_ENV = "M2M_CACHE"
CACHE_SAMPLE = 32  # files whose bytes file_signature hashes (all of them when there are fewer)


def default_cache_dir() -> Path:
    """The per-user cache folder: ``$M2M_CACHE``, else ``$XDG_CACHE_HOME/major2minor``, else
    ``~/.cache/major2minor`` (the XDG base-directory rule; a relative ``XDG_CACHE_HOME`` is ignored, as the
    specification says).  Outside the data folder, so a read-only or shared data set gets a cache too and
    a data folder is never written to."""
    env = os.environ.get(CACHE_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "major2minor"
    try:
        return Path("~").expanduser() / ".cache" / "major2minor"
    except RuntimeError:  # no home directory (e.g. a service account without HOME): the temp folder
        return Path(tempfile.gettempdir()) / "major2minor-cache"


def cache_dir(cache: Optional[str]) -> Path:
    """Where decoded arrays are cached: ``data.cache`` if set, else :func:`default_cache_dir`."""
    return Path(cache).expanduser() if cache else default_cache_dir()


def cache_key(**parts) -> str:
    blob = json.dumps({"format": CACHE_FORMAT, **parts}, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def sample_indices(n: int, k: int = CACHE_SAMPLE) -> List[int]:
    """``k`` indices spread evenly over ``range(n)``, the first and the last included (all when n <= k)."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def file_signature(paths: Sequence[Path]) -> str:
    """A hash identifying the files' contents well enough to key the decoded-array cache.

    It covers, for every file, its path, size, modification time and status-change time
    (``st_mtime_ns``, ``st_ctime_ns``: one ``stat`` each, no reading), plus a SHA-256 of the bytes of
    :data:`CACHE_SAMPLE` files spread evenly over the list (first and last included; every file when
    there are fewer).  So a file replaced by another of the same size is noticed: its mtime or ctime
    changes (ctime cannot be set back by ``cp -p``, ``rsync -a`` or archive tools, which restore mtime),
    and in a small folder its bytes are hashed anyway.  Not covered: a file outside the sample whose
    bytes change while size, mtime and ctime all stay the same (only possible by resetting the system
    clock or on file systems that do not keep these times); delete the cache folder then.  A metadata-only
    change (``chmod``, a new hard link) also changes ctime: the data are then decoded once more, which
    costs time but never serves wrong pixels.

    Why not hash every file: measured on 5,000 64x64 PNGs (62 MB, in the page cache, 2 CPU cores), this
    key takes 0.017 s, hashing every file's bytes 0.10 s, decoding them 0.75-0.8 s.  Hashing all would be
    affordable there, but the key is computed on every run, cache hit or not, and for CelebA (200k files)
    or ImageNet-LT (tens of GB, often on network storage) it would read the whole data set each time,
    which is what the cache exists to avoid.  The sample costs a few dozen reads.
    """
    digest = hashlib.sha256()
    for p in paths:
        try:
            st = os.stat(p)
            meta = f"{st.st_size} {st.st_mtime_ns} {st.st_ctime_ns}"
        except OSError:
            meta = "missing"
        digest.update(f"{p}\0{meta}\n".encode())
    for i in sample_indices(len(paths)):
        content = hashlib.sha256()
        try:
            with open(paths[i], "rb") as fh:
                for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                    content.update(block)
            digest.update(f"{i}\0".encode() + content.digest())
        except OSError:
            digest.update(f"{i}\0unreadable".encode())
    return digest.hexdigest()


def cached_arrays(
    directory: Path, name: str, key: str, build: Callable[[], Dict[str, np.ndarray]]
) -> Dict[str, np.ndarray]:
    """Load ``directory/name-key.npz`` if it exists, else ``build()`` the arrays and save them there.

    The file is written to a temporary name and renamed, so an interrupted run never leaves a
    half-written cache behind.  A folder that cannot be written only warns (the arrays are returned).
    """
    path = Path(directory) / f"{name}-{key}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            warnings.warn(f"decoded-array cache {path} is unreadable ({exc}); decoding again.", stacklevel=2)
    arrays = build()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
        log.info("cached decoded arrays in %s", path)
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)  # a full disk or quota (the per-user cache may sit in a small home)
        except OSError:
            pass
        warnings.warn(
            f"could not write the decoded-array cache {path} ({exc}); the data will be decoded "
            f"again next time. Set data.cache=DIR (or {CACHE_ENV}=DIR) to a writable folder.",
            stacklevel=2,
        )
    return arrays


# ----------------------------------------------------------------------------------------------
# images


def pil():
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is in the images/test extras
        raise ImportError(
            "decoding images needs Pillow: pip install 'major2minor[images]' (or pip install Pillow)."
        ) from None
    return Image


def bilinear() -> int:
    Image = pil()
    return getattr(Image, "Resampling", Image).BILINEAR  # Image.Resampling needs Pillow >= 9.1


def list_images(folder: Path) -> List[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def open_image(path: Path, mode: str = "RGB", draft: Optional[int] = None):
    """Open and fully decode one image; a broken file raises :class:`DataFormatError` naming it."""
    Image = pil()
    try:
        with Image.open(path) as img:
            if draft and img.format == "JPEG":
                # JPEG DCT scaling: decode at >= draft pixels a side instead of full size (much faster,
                # deterministic); the centre crop and resize below then work on the smaller image.
                img.draft("RGB" if mode == "RGB" else "L", (draft, draft))
            return img.convert(mode)
    except FileNotFoundError:
        raise missing(path, "an image file", "Check the data set's root folder and its list files.") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataFormatError(
            f"{path}: cannot decode the image ({exc}); expected a readable JPEG/PNG file. Re-download or remove it."
        ) from None


def center_square(img, size: int):
    """Centre square patch of side min(w, h), resized to ``size`` x ``size`` (bilinear, antialiased)."""
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    img = img.crop((left, top, left + s, top + s))
    if img.size != (size, size):
        img = img.resize((size, size), bilinear())
    return img


def resize_center_crop(img, size: int, resize: Optional[int] = None):
    """Resize the shorter side to ``resize`` (default size/0.875), then the centre ``size`` crop."""
    resize = resize or int(round(size / 0.875))
    w, h = img.size
    if w <= h:
        nw, nh = resize, max(resize, int(round(h * resize / w)))
    else:
        nw, nh = max(resize, int(round(w * resize / h))), resize
    img = img.resize((nw, nh), bilinear())
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def image_to_chw(img) -> np.ndarray:
    a = np.asarray(img, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def decode_images(
    paths: Sequence[Path], size: int, rule: str = "center-square", mode: str = "RGB", workers: int = 4
) -> np.ndarray:
    """Decode ``paths`` into one uint8 array (N, C, size, size).

    ``rule``: ``center-square`` (centre square patch, resized) or ``resize-center-crop`` (shorter side
    to size/0.875, centre crop: the usual ImageNet evaluation transform).  Threads decode in parallel
    (Pillow releases the GIL while decoding); the result does not depend on ``workers``.
    """
    channels = 3 if mode == "RGB" else 1
    require(  # before the allocation: numpy would fail with a bare MemoryError, or the system kill the run
        len(paths) * channels * size * size,
        f"decoding {len(paths)} images at {size}x{size} pixels",
        f"lower data.image_size (now {size})",
    )
    out = np.empty((len(paths), channels, size, size), dtype=np.uint8)
    draft = 2 * size if rule == "center-square" else int(round(size / 0.875))

    def one(i: int) -> None:
        img = open_image(Path(paths[i]), mode, draft=draft)
        img = center_square(img, size) if rule == "center-square" else resize_center_crop(img, size)
        out[i] = image_to_chw(img)

    if workers > 1 and len(paths) > 64:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(one, range(len(paths))))
    else:
        for i in range(len(paths)):
            one(i)
    return out


def channel_stats(x: np.ndarray, chunk: int = 4096) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """Per-channel mean and std of uint8 images (N, C, H, W), in [0, 1] units."""
    c = x.shape[1]
    total = np.zeros(c)
    total_sq = np.zeros(c)
    n = 0
    for i in range(0, len(x), chunk):
        part = x[i : i + chunk].astype(np.float64) / 255.0
        total += part.sum(axis=(0, 2, 3))
        total_sq += (part**2).sum(axis=(0, 2, 3))
        n += part.shape[0] * part.shape[2] * part.shape[3]
    mean = total / max(n, 1)
    std = np.sqrt(np.maximum(total_sq / max(n, 1) - mean**2, 1e-12))
    return tuple(round(float(m), 4) for m in mean), tuple(round(float(s), 4) for s in std)


# ----------------------------------------------------------------------------------------------
# checksums and downloads (only ever called by `m2m data prepare`)


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: Path, md5: str, progress: Callable[[str], None] = print) -> Path:
    """Download ``url`` to ``dest`` (via a temporary file) and check its MD5; reuse a verified file."""
    dest = Path(dest)
    if dest.exists() and md5sum(dest) == md5:
        progress(f"{dest}: already downloaded, checksum OK")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    progress(f"downloading {url} -> {dest}")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as fh:
            shutil.copyfileobj(response, fh, length=1 << 20)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DataNotFoundError(
            f"{url}: download failed ({exc}); download it by hand into {dest.parent} and run the command again."
        ) from None
    got = md5sum(tmp)
    if got != md5:
        tmp.unlink(missing_ok=True)
        raise DataFormatError(
            f"{url}: checksum mismatch (md5 {got}, expected {md5}); the download is corrupt "
            "or the file changed upstream. Run the command again, or download it by hand."
        )
    os.replace(tmp, dest)
    return dest


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract a tar archive, refusing members that would land outside ``dest``."""
    dest = Path(dest).resolve()
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            target = (dest / member.name).resolve()
            if dest != target and dest not in target.parents:
                raise DataFormatError(
                    f"{archive}: member {member.name!r} would extract outside {dest}; refusing to extract this archive."
                )
            if member.issym() or member.islnk():
                raise DataFormatError(f"{archive}: member {member.name!r} is a link; refusing to extract.")
        try:
            tar.extractall(dest, filter="data")
        except TypeError:  # Python without extraction filters (< 3.8.17 / 3.11.4)
            tar.extractall(dest)
