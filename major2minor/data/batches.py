"""The batches of one training epoch, in memory or streamed from files.

The engine draws each epoch's *global* index stream once (a shuffle, or 1/N_y over-sampling:
:mod:`major2minor.data.sampling`), cuts it into global batches of ``train.batch_size`` and gives
every rank its contiguous share (:func:`~major2minor.distributed.rank_slice`).  A *batch source*
turns that plan into ``(x, y)`` batches on the compute device, ``x`` float in [0, 1]:

* :class:`InMemoryBatches` -- the split's uint8 tensor lives on the device; a batch is an index
  gather plus the in-batch crop/flip (:func:`~major2minor.data.core.augment_batch`), drawn from the
  rank's augmentation generator.
* :class:`StreamingBatches` -- the split's images are files (:class:`StreamedImages`); a
  ``DataLoader`` whose batch sampler yields exactly this rank's share of each global batch decodes
  and augments them in ``data.workers`` worker processes (pinned memory on CUDA, copied without
  blocking).  Every position of the global stream carries its own augmentation seed, drawn from
  ``(train.seed, epoch)``: the augmented images depend on neither the number of workers nor the
  number of ranks, and a resumed run redraws exactly the same ones.

A streamed split is an ordinary :class:`~major2minor.data.core.Split` whose ``x`` is a
:class:`StreamedImages`: it has the shape, dtype and length of the uint8 tensor it stands for,
slicing it (``x[rank::world]``) gives a lazy view, and indexing it with indices decodes those images
(deterministic evaluation transform) into a real tensor, so code such as M2m's one-batch timing probe
works unchanged.  Evaluation of a streamed split (:func:`iter_uint8_batches`) goes through a
``DataLoader`` over the rank's strided shard, gathered like the in-memory path.
"""

from __future__ import annotations

import hashlib
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from major2minor import distributed as dist_utils
from major2minor.data.core import Augment, Split, augment_batch, to_float
from major2minor.data.sampling import batch_slices

Batch = Tuple[torch.Tensor, torch.Tensor]


# ----------------------------------------------------------------------------------------------
# a split's images as files


class StreamedImages:
    """Stands for a uint8 (N, C, H, W) image tensor whose images are decoded on access.

    ``dataset[i]`` gives ``(uint8 (C, H, W) tensor, label)`` with a deterministic transform (the
    evaluation transform); ``train_dataset`` (optional, same items) takes ``(index, seed)`` keys and
    applies the random training transform seeded per sample.  ``workers`` is the number of
    ``DataLoader`` worker processes for streamed batches.
    """

    dtype = torch.uint8

    def __init__(
        self,
        dataset: Dataset,
        item_shape: Sequence[int],
        train_dataset: Optional[Dataset] = None,
        workers: int = 0,
        fingerprint: bytes = b"",
        device: torch.device | str = "cpu",
        rows: Optional[range] = None,
    ):
        self.dataset = dataset
        self.train_dataset = train_dataset if train_dataset is not None else dataset
        self.item_shape = tuple(int(s) for s in item_shape)
        self.workers = max(int(workers), 0)
        self._fingerprint = fingerprint
        self.device = torch.device(device)
        self.rows = rows if rows is not None else range(len(dataset))

    def _view(self, rows: range, device=None) -> StreamedImages:
        return StreamedImages(
            self.dataset,
            self.item_shape,
            self.train_dataset,
            self.workers,
            self._fingerprint,
            self.device if device is None else device,
            rows,
        )

    # the tensor-like surface the rest of the package uses
    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), *self.item_shape))

    def dim(self) -> int:
        return 1 + len(self.item_shape)

    def to(self, device, non_blocking: bool = False) -> StreamedImages:
        return self._view(self.rows, torch.device(device))

    def cpu(self) -> StreamedImages:
        return self.to("cpu")

    def fingerprint(self) -> bytes:
        """What identifies the images (e.g. a digest of their file list) for the run's manifest."""
        return hashlib.sha256(
            self._fingerprint + repr((self.rows.start, self.rows.stop, self.rows.step)).encode()
        ).digest()

    def __getitem__(self, key):
        """A slice gives a lazy view; an int, a list or an index tensor decodes those images."""
        if isinstance(key, slice):
            return self._view(self.rows[key])
        if isinstance(key, int):
            return self.decode([self.rows[key]])[0]
        keys = torch.as_tensor(key).cpu().view(-1).tolist()
        return self.decode([self.rows[int(k)] for k in keys])

    def decode(self, items: Sequence[int]) -> torch.Tensor:
        """Decode ``items`` (indices into the dataset) in this process: uint8 (B, C, H, W) on ``device``."""
        if not len(items):
            return torch.zeros((0, *self.item_shape), dtype=torch.uint8, device=self.device)
        return torch.stack([self.dataset[int(i)][0] for i in items]).to(self.device)

    # streamed evaluation
    def loader(self, batch_size: int, pin_memory: bool = False) -> DataLoader:
        """A DataLoader over this view's rows in order (evaluation transform).

        Its workers live for one pass: a finished pass shuts them down, so no worker process outlives
        an evaluation (persistent workers that end up in a garbage cycle take seconds each to stop).
        """
        subset = torch.utils.data.Subset(self.dataset, list(self.rows))
        return DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=self.workers, pin_memory=pin_memory)


def is_streamed(split: Split) -> bool:
    return isinstance(split.x, StreamedImages)


def iter_uint8_batches(x, batch_size: int, device: torch.device) -> Iterator[torch.Tensor]:
    """The rows of ``x`` (a tensor or :class:`StreamedImages`) in order, as batches on ``device``."""
    if isinstance(x, StreamedImages):
        for xb, _ in x.loader(batch_size, pin_memory=device.type == "cuda"):
            yield xb.to(device, non_blocking=True)
        return
    for start in range(0, len(x), batch_size):
        yield x[start : start + batch_size].to(device, non_blocking=True)


# ----------------------------------------------------------------------------------------------
# the training batches of one epoch


def _local_batches(indices: torch.Tensor, batch_size: int, dist: dist_utils.DistInfo) -> Iterator[torch.Tensor]:
    """Positions in the global stream of this rank's share of each global batch.

    ``train.batch_size`` is the global batch; a final global batch smaller than the number of ranks
    is dropped on every rank alike.
    """
    positions = torch.arange(len(indices))
    for pos in batch_slices(positions, batch_size):
        if len(pos) < dist.world_size:
            continue
        yield dist_utils.rank_slice(pos, dist)


class InMemoryBatches:
    """Batches gathered from a device-resident split, augmented in-batch (the original path)."""

    streamed = False

    def __init__(
        self,
        split: Split,
        augment: Augment,
        generator: torch.Generator,
        dist: Optional[dist_utils.DistInfo] = None,
        device: torch.device | str = "cpu",
    ):
        self.split, self.augment, self.generator = split, augment, generator
        self.dist = dist or dist_utils.DistInfo()
        self.device = torch.device(device)

    def batches(self, indices: torch.Tensor, batch_size: int, epoch: int) -> Iterator[Batch]:
        for idx in batch_slices(indices, batch_size):
            if len(idx) < self.dist.world_size:
                continue
            idx = dist_utils.rank_slice(idx, self.dist).to(self.device)
            x = augment_batch(to_float(self.split.x[idx]), self.augment, self.generator)
            yield x, self.split.y[idx]


class _PlannedBatches(Sampler):
    """A batch sampler replaying a plan set before each epoch (lists of ``(index, seed)`` keys)."""

    def __init__(self) -> None:
        self.plan: List[List[Tuple[int, int]]] = []

    def __len__(self) -> int:
        return len(self.plan)

    def __iter__(self):
        return iter(list(self.plan))


def augmentation_seeds(seed: int, epoch: int, n: int) -> torch.Tensor:
    """One seed per position of epoch ``epoch``'s global stream, from ``(seed, epoch)`` only."""
    state = np.random.SeedSequence([int(seed), 0x5EED, int(epoch)]).generate_state(1, np.uint64)[0]
    gen = torch.Generator().manual_seed(int(state))
    return torch.randint(0, 2**62, (n,), generator=gen)


class StreamingBatches:
    """Batches decoded and augmented by ``DataLoader`` workers from a :class:`StreamedImages` split.

    The batch sampler yields this rank's share of each global batch of the engine's index stream,
    each sample with the augmentation seed of its position in the global stream.  Labels come with
    the decoded images.  Workers are started for each epoch and stop when it is done (a fork per
    worker and epoch, negligible against an epoch of decoding; nothing lingers between epochs or
    after the run).
    """

    streamed = True

    def __init__(
        self,
        split: Split,
        seed: int,
        dist: Optional[dist_utils.DistInfo] = None,
        device: torch.device | str = "cpu",
        pin_memory: Optional[bool] = None,
        prefetch_factor: int = 4,
    ):
        if not is_streamed(split):
            raise TypeError("StreamingBatches needs a split whose x is StreamedImages")
        images: StreamedImages = split.x
        if images.rows != range(len(images.dataset)):
            raise ValueError("StreamingBatches needs a whole split, not a view of it")
        self.images, self.seed = images, int(seed)
        self.dist = dist or dist_utils.DistInfo()
        self.device = torch.device(device)
        pin = self.device.type == "cuda" if pin_memory is None else pin_memory
        self.sampler = _PlannedBatches()
        extra = dict(prefetch_factor=prefetch_factor) if images.workers > 0 else {}
        self.loader = DataLoader(
            images.train_dataset, batch_sampler=self.sampler, num_workers=images.workers, pin_memory=pin, **extra
        )

    def plan(self, indices: torch.Tensor, batch_size: int, epoch: int) -> List[List[Tuple[int, int]]]:
        """This rank's batches of the epoch as ``(index, augmentation seed)`` keys."""
        indices = indices.cpu()
        seeds = augmentation_seeds(self.seed, epoch, len(indices))
        return [
            list(zip(indices[pos].tolist(), seeds[pos].tolist()))
            for pos in _local_batches(indices, batch_size, self.dist)
        ]

    def batches(self, indices: torch.Tensor, batch_size: int, epoch: int) -> Iterator[Batch]:
        self.sampler.plan = self.plan(indices, batch_size, epoch)
        for x, y in self.loader:
            yield to_float(x.to(self.device, non_blocking=True)), y.to(self.device, non_blocking=True)


def batch_source(
    split: Split,
    augment: Augment,
    generator: torch.Generator,
    seed: int,
    dist: Optional[dist_utils.DistInfo] = None,
    device: torch.device | str = "cpu",
):
    """The source that fits ``split``: streamed (files) or in memory."""
    if is_streamed(split):
        return StreamingBatches(split, seed, dist, device)
    return InMemoryBatches(split, augment, generator, dist, device)
