"""The training engine: one run of a recipe, in named phases that read top to bottom.

:meth:`Trainer.fit` is the whole story::

    open the run directory        new, resume (read last.pt, or last.prev.pt) or done (reuse the summary)
    set up                        data, f, the method (with its frozen g, loaded here), loss, optimiser
    restore                       model, optimiser and every random state from the checkpoint
    for epoch in [start, epochs):
        train one epoch           lr <- warm-up / step schedule; indices <- shuffle, or over-sample
                                  (1 / N_y) once the method is active (DRS, M2m: T0); for each batch:
                                  x, y <- method.transform_batch(f, x, y)   (M2m translates here)
                                  loss <- mean_i w_{y_i} * loss(f(x_i), y_i); one SGD step
        evaluate and checkpoint   validation (whole split); on a new best validation bACC: test and
                                  best.pt; a log.csv row; last.pt atomically (every RNG state)
    finish                        test at the last epoch; summary.json; figures

Everything random draws from generators seeded from ``train.seed`` and stored in the checkpoint, so a
resumed run continues exactly where the interrupted one stopped.  The engine knows methods only
through the :class:`~major2minor.methods.base.Rebalancer` protocol.  It does not train M2m's g:
the pipeline (:func:`major2minor.pipeline.train`) trains or finds g first and passes its path.
"""

from __future__ import annotations

import dataclasses
import math
import platform
import shutil
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import torch

from major2minor import distributed as dist_utils
from major2minor.atomic import json_text
from major2minor.config import Config, check_streamable
from major2minor.data import DataBundle, Split, build_dataset, to_float
from major2minor.data.batches import batch_source, is_streamed, iter_uint8_batches
from major2minor.data.sampling import epoch_indices
from major2minor.display import Log, duration, percent
from major2minor.losses import build_loss
from major2minor.methods.base import EpochContext, Rebalancer, RunContext, g_need
from major2minor.methods.generator import describe_generator, load_generators
from major2minor.metrics import classification_metrics
from major2minor.models import build_model
from major2minor.models.footprint import check_training_memory
from major2minor.numerics import ProcessSettings, autocast, choose_amp
from major2minor.registry import MODELS, REBALANCERS
from major2minor.rundir import RunDir, RunDirError, TrainingCheckpoint, check_resume_config, data_changes
from major2minor.tblog import NullTBLogger, TBLogger


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/inf loss; the last good checkpoint is kept."""


def learning_rate(optim_cfg, epoch: int) -> float:
    """lr(epoch) = base * (epoch+1)/W for epoch < W (warm-up), else base * decay^(#milestones <= epoch)."""
    base = optim_cfg.lr
    if epoch < optim_cfg.warmup_epochs:
        return base * (epoch + 1) / optim_cfg.warmup_epochs
    return base * optim_cfg.decay ** sum(epoch >= m for m in optim_cfg.milestones)


def build_model_seeded(cfg: Config, bundle: DataBundle, seed: int, device: torch.device) -> torch.nn.Module:
    """Initialise the model from ``seed`` without touching the caller's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(cfg, bundle.num_classes, bundle.input_shape, bundle.mean, bundle.std)
    model = model.to(device)
    if cfg.train.channels_last and bundle.is_image:
        model = model.to(memory_format=torch.channels_last)
    return model


@torch.no_grad()
def predict(
    model: torch.nn.Module, x: torch.Tensor, batch_size: int, device: torch.device, amp: str = "none"
) -> torch.Tensor:
    """Logits for a whole split, in large batches, model in eval mode (restored after)."""
    was_training = model.training
    model.eval()
    outs = []
    for xb in iter_uint8_batches(x, batch_size, device):  # a tensor, or streamed images (DataLoader)
        xb = to_float(xb)
        with autocast(device, amp):
            outs.append(model(xb).float())
    model.train(was_training)
    return torch.cat(outs) if outs else torch.zeros(0)


def evaluate(
    model: torch.nn.Module,
    split: Split,
    num_classes: int,
    train_counts: List[int],
    device: torch.device,
    batch_size: int = 1024,
    amp: str = "none",
    dist: Optional[dist_utils.DistInfo] = None,
) -> Dict[str, Any]:
    """Metrics on the whole split; under torchrun each rank predicts x[rank::world] and the logits are
    gathered back in order, so every rank computes the same numbers on the whole split."""
    dist = dist or dist_utils.DistInfo()
    logits = predict(model, split.x[dist.rank :: dist.world_size], batch_size, device, amp)
    logits = dist_utils.gather_in_order(logits, len(split), dist)
    y = split.y.to(logits.device)
    metrics = classification_metrics(y.cpu().numpy(), logits.argmax(1).cpu().numpy(), num_classes, train_counts)
    metrics["loss"] = float(torch.nn.functional.cross_entropy(logits, y)) if len(y) else float("nan")
    return metrics


class EpochEstimate:
    """Times the first training steps of the first epoch this process runs and tells how long an epoch
    and the rest of the run will take.

    The first ``warmup`` batches (loader start-up, kernel selection, compilation) are left out; the
    next ``measure`` batches (fewer in a short epoch) are timed, with one device sync at either end.
    Evaluation and, for M2m, translation from T0 on (M2m prints its own estimate then) come on top.
    """

    def __init__(
        self,
        n_batches: int,
        epochs_left: int,
        batch_size: int,
        device: torch.device,
        warmup: int = 2,
        measure: int = 10,
    ):
        self.n_batches, self.epochs_left, self.batch_size, self.device = n_batches, epochs_left, batch_size, device
        self.warmup = min(warmup, max(n_batches - 1, 0))
        self.last = min(self.warmup + measure, n_batches) - 1  # the batch after which to report
        self.t0 = time.perf_counter()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def after_batch(self, b: int) -> Optional[str]:
        if b == self.warmup - 1:
            self._sync()
            self.t0 = time.perf_counter()
        if b != self.last:
            return None
        self._sync()
        per_batch = (time.perf_counter() - self.t0) / max(b - self.warmup + 1, 1)
        epoch = per_batch * self.n_batches
        return (
            f"time estimate: {per_batch:.3f}s per training step ({self.batch_size / max(per_batch, 1e-9):.0f} "
            f"images/s, {b + 1 - self.warmup} steps timed) -> about {duration(epoch)} per epoch of "
            f"{self.n_batches} steps and {duration(epoch * self.epochs_left)} for the "
            f"{self.epochs_left} epoch(s) left, plus evaluation"
        )


@dataclass
class TrainState:
    """What the loop carries from epoch to epoch (saved in every checkpoint)."""

    epoch: int = 0  # next epoch to run
    best_val_bacc: float = -1.0
    best_epoch: int = -1
    test_at_best: Dict[str, Any] = field(default_factory=dict)
    val_at_best: Dict[str, Any] = field(default_factory=dict)
    history: List[Dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0
    # the best validation epoch over the whole run, whether or not it may be reported (train.select)
    overall_best_val_bacc: float = -1.0
    overall_best_epoch: int = -1
    test_at_overall_best: Dict[str, Any] = field(default_factory=dict)

    def adopt_overall_best(self) -> None:
        """A checkpoint written before the whole-run best was kept (a prefix of an earlier version) has
        tracked its best over every epoch: that is the whole-run best so far."""
        if self.overall_best_epoch < 0 and self.best_epoch >= 0:
            self.overall_best_val_bacc, self.overall_best_epoch = self.best_val_bacc, self.best_epoch
            self.test_at_overall_best = self.test_at_best


@dataclass
class EpochTotals:
    """What one epoch of training produced, summed on the device (read once, after the epoch)."""

    lr: float
    weights: Optional[Sequence[float]]  # the class weights in force, None = unweighted
    seen: torch.Tensor  # (C,) samples per class the model trained on
    loss_sum: torch.Tensor
    correct: torch.Tensor


def resolved_threads(cfg: Config) -> int:
    """``train.threads``, or for 0 (automatic): one thread for a light model (``mlp``, ``cnn``: an op's work is
    too small to split, and threads that wait for each other on a shared machine made a small run 8x slower),
    else 0, torch's default (one per core).  Measured in benchmarks/README.md."""
    if cfg.train.threads > 0:
        return cfg.train.threads
    return 1 if MODELS.entry(cfg.model.name).info.light else 0


def counts_preview(counts: Sequence[int]) -> str:
    """``[140, 49, 21]`` for a few classes, ``[5000, 2997, 1796]...[139, 83, 50]`` for more than six."""
    counts = list(counts)
    return str(counts) if len(counts) <= 6 else f"{counts[:3]}...{counts[-3:]}"


def check_splits(bundle: DataBundle) -> None:
    """Model selection needs a validation split and the result a test split: refuse empty ones now,
    before any training (an empty split would only fail at the first evaluation)."""
    for split, key in (("val", "val_per_class"), ("test", "test_per_class")):
        if len(getattr(bundle, split)) == 0:
            raise ValueError(
                f"the {'validation' if split == 'val' else 'test'} split of {bundle.name} is empty; it needs samples "
                f"of every class: set data.{key}=N (N >= 1) or leave it null for the data set's default, or give "
                f"the data set a {split} file."
            )


def check_same_data(run: RunDir, manifest: Dict[str, Any]) -> None:
    """A run resumes only on the data it started with: its manifest's checksum (labels of every split and
    the first inputs) and class names must match the ones ``manifest.json`` recorded at the start."""
    before = run.read_manifest()
    changes = data_changes(before, manifest) if before is not None else []
    if changes:
        raise RunDirError(
            f"cannot resume {run}: its data changed since the run started ({'; '.join(changes)}). Resume it "
            "on the data it started with (see its manifest.json), or start a new run with run.dir=PATH."
        )


def _kept(run: RunDir, epoch: int) -> str:
    if epoch == 0:
        return "no checkpoint was written (the first epoch did not finish)."
    return f"the last good checkpoint {run / RunDir.LAST} (end of epoch {epoch}) is kept."


FLUSH_NOT_APPLIED = (
    "train.flush_denormal={} could not be applied to every CPU thread (the CPU lacks the mode, or torch's threads "
    "were started before this run); results are unaffected but speed may be lower: call "
    "major2minor.numerics.flush_denormals() at the start of the program."
)


def _progress(mode: str, total: int, initial: int, desc: str = ""):
    """The run's progress bar (with ETA) on a terminal; a terminal that reports zero columns (some IDE and
    CI consoles) gets a fixed 100-column bar instead of an invisible one."""
    from tqdm.auto import tqdm

    disable = mode == "none" or (mode == "auto" and not sys.stderr.isatty())
    width_known = shutil.get_terminal_size((0, 0)).columns > 0
    return tqdm(
        total=total,
        initial=initial,
        disable=disable,
        unit="batch",
        desc=desc or None,
        dynamic_ncols=width_known,
        ncols=None if width_known else 100,
        leave=False,
    )


@dataclass(frozen=True)
class RunParts:
    """Everything :meth:`Trainer.setup` builds for one run; the values that change from epoch to epoch are
    in :class:`TrainState`, the progress display in :class:`Progress`."""

    run: RunDir
    dist: dist_utils.DistInfo
    device: torch.device
    log: Log  # rank 0's log; the other ranks log nothing
    bundle: DataBundle
    manifest: Dict[str, Any]  # the data's manifest (checksum, class names): manifest.json and the seal
    counts: List[int]
    method: Rebalancer
    model: torch.nn.Module  # f
    step_model: torch.nn.Module  # what the training step calls (compiled, DDP)
    translate_model: torch.nn.Module  # what methods translate with (never the DDP wrapper)
    train_split: Split
    loss_fn: torch.nn.Module
    optimizer: torch.optim.Optimizer
    sample_gen: torch.Generator
    aug_gen: torch.Generator
    source: Any  # the batches of each epoch (data.batches)
    amp: str
    amp_reason: str
    tb: Any
    generators_used: List[Dict[str, Any]]
    n_batches: int


class Progress:
    """The run's progress bar (with ETA on a terminal), the time estimate of the first steps, and where
    progress lines go (above the bar when it shows, else to the log)."""

    def __init__(self, bar: Any, estimate: Optional[EpochEstimate], log: Log):
        self.bar, self.estimate, self.log = bar, estimate, log

    def say(self, msg: str) -> None:
        if self.bar.disable:
            self.log(msg)
        else:
            self.bar.write(msg)

    def after_batch(self, b: int) -> None:
        self.bar.update(1)
        if self.estimate is not None and (msg := self.estimate.after_batch(b)):
            self.say(msg)

    def eta(self, history: List[Dict[str, Any]], epochs_left: int) -> str:
        """``", about 3m left"`` when no bar shows the ETA (output to a file or a pipe): the mean of the last
        five epochs' times (M2m's epochs after T0 cost more than those before) times the epochs left."""
        if not self.bar.disable or epochs_left <= 0 or not history:
            return ""
        recent = [r["epoch_seconds"] for r in history[-5:]]
        return f", about {duration(sum(recent) / len(recent) * epochs_left)} left"

    def epoch_done(self) -> None:
        self.estimate = None  # the first epoch this process runs is the one timed

    def close(self) -> None:
        self.bar.close()


class Trainer:
    """One run: ``Trainer(cfg, ...).fit(resume)`` trains it and returns its summary.

    Args:
        cfg: the resolved, validated configuration; ``run.dir`` (else ``ROOT/RECIPE/METHOD/seedN``) is
            where the run lives (:class:`~major2minor.rundir.RunDir`).
        log: where progress lines go (``None``: nowhere); only rank 0 logs under torchrun.
        generators: paths of the frozen classifiers the method needs (M2m's g), when the method's
            own settings do not give them (the pipeline passes its cached ERM g here).
        progress_label: the progress bar's name (the pipeline's g: "g (ERM)").

    The phases take and return what they use: :meth:`setup` returns the run's parts (:class:`RunParts`),
    :meth:`restore` the loop's state (:class:`TrainState`), :meth:`announce` the :class:`Progress`.
    """

    def __init__(
        self,
        cfg: Config,
        log: Optional[Log] = print,
        generators: Sequence[str] = (),
        progress_label: str = "",
    ):
        self.cfg = cfg
        self.run = RunDir.of(cfg)
        self.log = log or (lambda s: None)
        self.generator_paths = list(generators)
        self.progress_label = progress_label
        # the first epoch that may be reported (train.select): T0 for a deferred method, else the first
        deferred = REBALANCERS.get(cfg.rebalance.name).deferred
        self.judged_from = cfg.train.deferred_epoch if deferred and cfg.train.select == "from_t0" else 0

    def fit(self, resume: bool = False) -> Dict[str, Any]:
        """Open, set up, restore, train epoch by epoch, finish; process-wide settings restored after."""
        t_start = time.time()
        with ProcessSettings(self.cfg.train, threads=resolved_threads(self.cfg)) as settings, ExitStack() as held:
            dist, device = dist_utils.setup(self.cfg.train.device)
            settings.for_device(device, dist.enabled)
            log = self.log if dist.is_main else (lambda s: None)  # one voice: rank 0 logs, writes, draws
            if not settings.flush_applied:
                log(FLUSH_NOT_APPLIED.format(str(self.cfg.train.flush_denormal).lower()))
            # the data first: a missing or unreadable file is reported as such, and reuse compares its manifest
            bundle = self.load_data()
            status = self.open_run_dir(dist, resume, held)
            if status == "done":
                return self.reuse_finished(bundle, dist, log)
            checkpoint = self.run.read_resume_checkpoint(log) if status == "resume" else None
            if checkpoint is not None:
                check_resume_config(self.run.path, checkpoint.config, self.cfg.to_dict())
            parts = self.setup(dist, device, bundle, status == "resume", log)
            state = self.restore(parts, checkpoint) if checkpoint is not None else TrainState()
            progress = self.announce(parts, state)
            # closed (and cleared) on the way out of an error or Ctrl-C too, before the caller prints why it
            # stopped: a bar closed later would put that line after the bar's text, or clear it away
            held.callback(progress.close)
            for epoch in range(state.epoch, self.cfg.train.epochs):
                t_epoch = time.time()
                totals = self.train_epoch(parts, state, progress, epoch)
                self.check_weights(parts, epoch)
                self.evaluate_and_checkpoint(parts, state, progress, epoch, totals, t_epoch)
            return self.finish(parts, state, progress, t_start)

    # -- phase: open the run directory ----------------------------------------------------------

    def load_data(self) -> DataBundle:
        cfg = self.cfg
        return build_dataset(cfg.data, cfg.train.seed if cfg.data.seed is None else cfg.data.seed)

    def open_run_dir(self, dist: dist_utils.DistInfo, resume: bool, held: ExitStack) -> str:
        """'new', 'resume' or 'done' (decided on rank 0, shared with every rank).  Rank 0, the only writer,
        holds the directory's lock until the run ends: a second writer is refused before it touches a file."""
        status = None
        if dist.is_main:
            held.enter_context(self.run.lock())
            status = self.run.prepare(resume)
        return dist_utils.broadcast_object(status, dist)

    def reuse_finished(self, bundle: DataBundle, dist: dist_utils.DistInfo, log: Log) -> Dict[str, Any]:
        """A finished run is reused only when it is the result asked for: trained with these result-deciding
        settings, on this data (manifest checksum and class names), with the g's given, and with its
        summary.json and config.yaml as it wrote them (:func:`~major2minor.rundir.verify_finished`)."""
        summary = self.run.verify(self.cfg.to_dict(), bundle.manifest(), self.generator_paths)
        log(f"{self.run}: finished already (same settings, data and files); reusing its summary")
        if dist.is_main and not self.run.has_figures():  # killed after its summary
            self.run.write_figures(log=log)
        return summary

    # -- phase: set up --------------------------------------------------------------------------

    def setup(
        self, dist: dist_utils.DistInfo, device: torch.device, bundle: DataBundle, resuming: bool, log: Log
    ) -> RunParts:
        """f, the method and its frozen g, the training split, loss, optimiser, random streams; the run's
        config.yaml, manifest.json and environment.json (rank 0)."""
        cfg, seed = self.cfg, self.cfg.train.seed
        check_splits(bundle)
        manifest = bundle.manifest()
        if resuming:
            check_same_data(self.run, manifest)
        method_cls = REBALANCERS.get(cfg.rebalance.name)
        method: Rebalancer = method_cls(cfg, bundle.train_counts)
        # estimated before anything is allocated: an impossible size is refused naming its setting
        check_training_memory(cfg, bundle.num_classes, bundle.input_shape, device, train_size=len(bundle.train))
        model = build_model_seeded(cfg, bundle, seed, device)
        # bf16 autocast where it pays (train.amp=auto): the choice and its reason go into environment.json
        amp, amp_reason = choose_amp(cfg.train.amp, device, MODELS.entry(cfg.model.name).info.bf16)
        paths = self.frozen_generator_paths(method_cls)
        generators = load_generators(paths, cfg, bundle, device)
        method.setup(RunContext(cfg, bundle, device, self.run.path, log, dist.rank, generators, amp))
        check_streamable(cfg.rebalance.name, streamed=is_streamed(bundle.train))
        train_split = method.prepare_train(bundle.train, seed).to(device)  # SMOTE adds samples
        o = cfg.optim
        optimizer = torch.optim.SGD(
            model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=o.nesterov
        )
        # separate generators per purpose, so e.g. M2m's draws do not shift the sampling stream
        aug_gen = torch.Generator(device=device).manual_seed(seed + 1 + 1000 * dist.rank)  # per rank
        if dist.is_main:
            self.write_run_files(manifest, dist, amp, amp_reason)
        return RunParts(
            self.run, dist, device, log, bundle, manifest, bundle.train_counts, method, model,
            *self.wrap_model(model, dist, device), train_split, build_loss(cfg, bundle.train_counts).to(device),
            optimizer, torch.Generator().manual_seed(seed), aug_gen,
            # the batches of each epoch: gathered from the device-resident split, or streamed from files
            batch_source(train_split, bundle.augment, aug_gen, seed, dist, device),
            amp, amp_reason,
            TBLogger.from_config(cfg, self.run.path, bundle.class_names) if dist.is_main else NullTBLogger(),
            [describe_generator(p) for p in paths],
            math.ceil(len(train_split) / cfg.train.batch_size),
        )  # fmt: skip

    def write_run_files(self, manifest: Dict[str, Any], dist: dist_utils.DistInfo, amp: str, amp_reason: str):
        self.run.write_config(self.cfg)
        self.run.write_manifest(manifest)
        self.run.write_environment({"world_size": dist.world_size, "amp": amp, "amp_reason": amp_reason})

    def frozen_generator_paths(self, method_cls: type) -> List[str]:
        """The g's to load: the method's own setting, else the paths given to the trainer."""
        need = g_need(self.cfg)
        if need == "none":
            return []
        paths = list(method_cls.generator_paths(self.cfg)) if need == "given" else self.generator_paths
        if not paths:
            raise ValueError(
                f"rebalance.name={self.cfg.rebalance.name} needs a frozen classifier g, but none was "
                "given: run it with major2minor.pipeline.train (as `m2m train` does), which trains "
                "and caches an ERM g first, or set m2m.generator=PATH."
            )
        return paths

    def wrap_model(self, model: torch.nn.Module, dist: dist_utils.DistInfo, device: torch.device):
        """(the module the training step calls, the module methods translate with)."""
        step_model = torch.compile(model) if self.cfg.train.compile else model
        if not dist.enabled:
            return step_model, step_model
        # M2m translates with the plain module under DDP (translation needs input gradients only, which
        # must not trigger DDP's gradient all-reduce)
        ddp = torch.nn.parallel.DistributedDataParallel(
            step_model, device_ids=[device.index] if device.type == "cuda" else None
        )
        return ddp, model

    # -- phase: restore -------------------------------------------------------------------------

    def restore(self, parts: RunParts, ckpt: TrainingCheckpoint) -> TrainState:
        """Model, optimiser, sampler / augmentation / method random states; returns the loop state."""
        parts.model.load_state_dict(ckpt.model)
        parts.optimizer.load_state_dict(ckpt.optimizer)
        parts.sample_gen.set_state(ckpt.rng["sample"])
        if len(ckpt.per_rank) != parts.dist.world_size:
            raise ValueError(
                f"{self.run} was saved by {len(ckpt.per_rank)} process(es) but is resumed with "
                f"{parts.dist.world_size}; resume with the same torchrun --nproc_per_node."
            )
        mine = ckpt.per_rank[parts.dist.rank]
        parts.aug_gen.set_state(mine["augment"].to(parts.aug_gen.get_state().device))
        parts.method.load_state_dict(mine["rebalancer"])
        state = TrainState(**ckpt.state)
        state.adopt_overall_best()
        parts.log(f"resuming {self.run} at epoch {state.epoch}")
        return state

    def announce(self, parts: RunParts, state: TrainState) -> Progress:
        """The run's one-line description; the progress bar and the time estimate of the first steps."""
        cfg, bs, dist, b = self.cfg, self.cfg.train.batch_size, parts.dist, parts.bundle
        n = len(parts.train_split)
        if dist.enabled and bs < dist.world_size:
            raise ValueError(
                f"train.batch_size={bs} is the global batch and must be >= the number of processes ({dist.world_size})."
            )
        bar = _progress(
            cfg.train.progress if dist.is_main else "none",
            cfg.train.epochs * parts.n_batches,
            state.epoch * parts.n_batches,
            desc=self.progress_label,
        )
        counts = parts.counts
        parts.log(
            f"{cfg.method}: {b.name} train {len(b.train)} (counts {counts_preview(counts)}), "
            f"val {len(b.val)}, test {len(b.test)}; model {cfg.model.name}; device {parts.device} "
            f"({'bf16 autocast' if parts.amp == 'bf16' else 'fp32'}; {parts.amp_reason}); "
            + (f"{dist.world_size} processes; " if dist.enabled else "")
            + (
                f"streamed by {parts.train_split.x.workers} loader workers per process; "
                if parts.source.streamed
                else ""
            )
            + f"run dir {self.run}"
        )
        n_steps = n // bs + int(n % bs >= max(dist.world_size, 1))  # batches actually run
        estimate = (
            EpochEstimate(n_steps, cfg.train.epochs - state.epoch, bs, parts.device)
            if state.epoch < cfg.train.epochs and n_steps > 0
            else None
        )
        return Progress(bar, estimate, parts.log)

    # -- phase: one epoch -----------------------------------------------------------------------

    def train_epoch(self, parts: RunParts, state: TrainState, progress: Progress, epoch: int) -> EpochTotals:
        """One pass over this epoch's index stream, one SGD step per batch."""
        lr = learning_rate(self.cfg.optim, epoch)
        for group in parts.optimizer.param_groups:
            group["lr"] = lr
        weights = parts.method.class_weights(epoch)
        class_weight = None if weights is None else torch.as_tensor(weights, dtype=torch.float32, device=parts.device)
        indices = epoch_indices(parts.train_split.y, parts.method.sample_weights(epoch), parts.sample_gen)
        parts.method.on_epoch_start(
            epoch, EpochContext(parts.translate_model, parts.train_split, parts.bundle, parts.n_batches)
        )
        parts.model.train()
        zeros = lambda **kw: torch.zeros(**kw, device=parts.device)  # noqa: E731
        totals = EpochTotals(
            lr, weights, zeros(size=(parts.bundle.num_classes,), dtype=torch.long), zeros(size=()), zeros(size=())
        )
        # train.batch_size is the global batch: each rank gets its contiguous share of every global batch
        # (a final global batch smaller than the number of ranks is dropped on every rank alike), in
        # memory or decoded by DataLoader workers (data/batches.py)
        for b, (x, y) in enumerate(parts.source.batches(indices, self.cfg.train.batch_size, epoch)):
            self.train_step(parts, x, y, epoch, b, class_weight, totals)
            progress.after_batch(b)
        progress.epoch_done()
        return totals

    def train_step(
        self,
        parts: RunParts,
        x: torch.Tensor,
        y: torch.Tensor,
        epoch: int,
        b: int,
        class_weight: Optional[torch.Tensor],
        totals: EpochTotals,
    ) -> None:
        """The method's batch transform, then loss, backward and step; sums stay on the device."""
        x, y = parts.method.transform_batch(parts.translate_model, x, y, epoch)
        if self.cfg.train.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(parts.device, parts.amp):
            logits = parts.step_model(x)
        loss = parts.method.batch_loss(parts.loss_fn(logits.float(), y, class_weight), y, class_weight)
        # under DDP every rank must take the same decision, so the check sees the summed loss
        if not torch.isfinite(
            dist_utils.all_reduce_sum(loss.detach().clone(), parts.dist) if parts.dist.enabled else loss
        ):
            raise NonFiniteLossError(
                f"non-finite loss ({loss.item()}) at epoch {epoch + 1}/{self.cfg.train.epochs}, batch "
                f"{b + 1}/{parts.n_batches}; {_kept(self.run, epoch)} Lower optim.lr or check the inputs "
                "for NaN/inf."
            )
        parts.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        parts.optimizer.step()
        totals.seen += torch.bincount(y, minlength=parts.bundle.num_classes)
        totals.loss_sum += loss.detach() * len(y)
        totals.correct += (logits.argmax(1) == y).sum()

    def check_weights(self, parts: RunParts, epoch: int) -> None:
        """A step can leave inf/NaN weights with a finite loss (the last batch): never save such a model."""
        tensors = [(n, t) for n, t in parts.model.state_dict().items() if t.is_floating_point()]
        if not bool(torch.stack([torch.isfinite(t).all() for _, t in tensors]).all()):  # one sync
            bad = [n for n, t in tensors if not bool(torch.isfinite(t).all())]
            raise NonFiniteLossError(
                f"non-finite weights ({bad[:3]}) after epoch {epoch + 1}/"
                f"{self.cfg.train.epochs}; {_kept(self.run, epoch)} Lower optim.lr."
            )

    # -- phase: evaluate and checkpoint ---------------------------------------------------------

    def evaluate_and_checkpoint(
        self, parts: RunParts, state: TrainState, progress: Progress, epoch: int, totals: EpochTotals, t_epoch: float
    ) -> None:
        """Validation on the whole split (model selection on its bACC only), test on a new best, the
        log row, best.pt / last.pt, the epoch's line."""
        for t in (totals.seen, totals.loss_sum, totals.correct):  # what all ranks together saw this epoch
            dist_utils.all_reduce_sum(t, parts.dist)
        dist_utils.broadcast_buffers(parts.model, parts.dist)  # evaluate (and save) rank 0's BN statistics
        val = self.evaluate(parts, parts.bundle.val)
        improved = self.track_best(parts, state, epoch, val)
        row = self.epoch_row(parts, state, epoch, totals, val)
        row["epoch_seconds"] = time.time() - t_epoch  # training and evaluation
        state.history.append(row)
        state.train_seconds += row["epoch_seconds"]
        state.epoch = epoch + 1
        self.save(parts, state, epoch, row, improved)
        fields = parts.method.progress_fields(row)
        if self.earlier_best_note(state) is not None:  # said in full once, at the end (summary.json warnings)
            fields["WARNING"] = f"pre-T0 epoch {state.overall_best_epoch + 1} better on val"
        extra = (" | " + ", ".join(f"{k} {v}" for k, v in fields.items())) if fields else ""
        progress.bar.set_postfix_str(f"val bACC {percent(val['bacc'])}")
        progress.say(
            f"epoch {epoch + 1}/{self.cfg.train.epochs} lr {totals.lr:.4g} loss {row['train_loss']:.4f} "
            f"val bACC {percent(val['bacc'])} GM {percent(val['gm'])}{' *' if improved else ''}{extra} "
            f"({row['epoch_seconds']:.1f}s{progress.eta(state.history, self.cfg.train.epochs - state.epoch)})"
        )
        for warning in parts.method.epoch_warnings(row):
            progress.say(f"WARNING: {warning}")

    def selectable(self, epoch: int) -> bool:
        """May ``epoch`` (0-based) be the reported one?  With ``train.select=from_t0`` a method with a deferred
        phase (DRS, DRW, M2m, ...) is judged on its own epochs, ``epoch >= T0``: before T0 it is the plain model."""
        return epoch >= self.judged_from

    def track_best(self, parts: RunParts, state: TrainState, epoch: int, val: Dict[str, Any]) -> bool:
        """Keep the whole-run best and the reported best (the best selectable epoch; a later epoch wins a tie);
        test on a new best of either.  True when the reported best moved to this epoch (best.pt is written)."""
        st, test = state, None
        if val["bacc"] >= st.overall_best_val_bacc:
            test = self.evaluate(parts, parts.bundle.test)
            st.overall_best_val_bacc, st.overall_best_epoch, st.test_at_overall_best = val["bacc"], epoch, test
        # a best left from epochs that may not be reported (a branched prefix's, before T0) is replaced
        improved = self.selectable(epoch) and (val["bacc"] >= st.best_val_bacc or not self.selectable(st.best_epoch))
        if improved:
            st.best_val_bacc, st.best_epoch, st.val_at_best = val["bacc"], epoch, val
            st.test_at_best = test if test is not None else self.evaluate(parts, parts.bundle.test)
        return improved

    def earlier_best_note(self, state: TrainState) -> Optional[str]:
        """A warning when an epoch that may not be reported (before T0) was better on validation than the
        reported one: the method then did worse on validation than the plain model it started from."""
        st, t0 = state, self.cfg.train.deferred_epoch
        if st.best_epoch < 0 or self.selectable(st.overall_best_epoch) or st.overall_best_val_bacc <= st.best_val_bacc:
            return None
        return (
            f"the plain model before T0 was better on validation (bACC {percent(st.overall_best_val_bacc)} at epoch "
            f"{st.overall_best_epoch + 1}) than {self.cfg.method} at its reported epoch {st.best_epoch + 1} "
            f"({percent(st.best_val_bacc)}); the reported epoch is chosen from epoch {t0 + 1} on, where the method "
            f"acts (train.deferred_epoch={t0}, train.select=from_t0; train.select=all chooses from every epoch)"
        )

    def evaluate(self, parts: RunParts, split: Split) -> Dict[str, Any]:
        return evaluate(
            parts.model,
            split,
            parts.bundle.num_classes,
            parts.counts,
            parts.device,
            self.cfg.train.eval_batch_size,
            parts.amp,
            parts.dist,
        )

    def epoch_row(
        self, parts: RunParts, state: TrainState, epoch: int, totals: EpochTotals, val: Dict[str, Any]
    ) -> Dict[str, Any]:
        """The epoch's log.csv row: training and validation figures, then the method's statistics."""
        n_seen, st = int(totals.seen.sum()), state
        row: Dict[str, Any] = {
            "epoch": epoch + 1,  # epochs are numbered from 1 in every file and on screen
            "lr": totals.lr,
            "train_loss": float(totals.loss_sum) / max(n_seen, 1),
            "train_acc": float(totals.correct) / max(n_seen, 1),
            "val_loss": val["loss"],
            "val_acc": val["acc"],
            "val_bacc": val["bacc"],
            "val_gm": val["gm"],
            # the reported best so far; before T0 (no epoch may be reported yet) the whole-run best, as a plain
            # run's rows show it, so a cell branched from a shared prefix logs the same rows as one trained alone
            "best_epoch": (st.best_epoch if st.best_epoch >= 0 else st.overall_best_epoch) + 1,
            "test_bacc_at_best": (st.test_at_best or st.test_at_overall_best).get("bacc"),
            "test_gm_at_best": (st.test_at_best or st.test_at_overall_best).get("gm"),
            "seen_per_class": totals.seen.tolist(),
            "class_weights": None if totals.weights is None else [round(float(w), 6) for w in totals.weights],
        }
        stats = dist_utils.all_gather_object(parts.method.epoch_stats(), parts.dist)
        row.update(parts.method.merge_epoch_stats(stats))
        return row

    def save(self, parts: RunParts, state: TrainState, epoch: int, row: Dict[str, Any], improved: bool) -> None:
        """log.csv, TensorBoard, best.pt (on a new best) and last.pt, atomically, from rank 0."""
        per_rank = dist_utils.all_gather_object(
            {"augment": parts.aug_gen.get_state().cpu(), "rebalancer": parts.method.state_dict()}, parts.dist
        )
        if not parts.dist.is_main:
            return
        self.run.write_log(state.history)
        parts.tb.log_row(row["epoch"], row)
        ckpt = TrainingCheckpoint(
            model=parts.model.state_dict(),
            optimizer=parts.optimizer.state_dict(),
            epoch=epoch,
            state=state.__dict__,
            rng={"sample": parts.sample_gen.get_state(), "augment": parts.aug_gen.get_state()},
            rebalancer=parts.method.state_dict(),
            per_rank=per_rank,
            counts=parts.counts,
            num_classes=parts.bundle.num_classes,
            model_name=self.cfg.model.name,
            config=self.cfg.to_dict(),
        )
        if improved:
            self.run.save_checkpoint(dataclasses.replace(ckpt, kind="best"), RunDir.BEST)
        self.run.save_checkpoint(ckpt, RunDir.LAST, keep_previous=True)

    def selection_summary(self, state: TrainState) -> Dict[str, Any]:
        """How the reported epoch was chosen, and the whole-run best validation epoch beside it."""
        return {
            "rule": self.cfg.train.select,
            "from_epoch": self.judged_from + 1,
            "overall_best_epoch": state.overall_best_epoch + 1,
            "val_bacc_at_overall_best": state.overall_best_val_bacc,
            "test_at_overall_best": state.test_at_overall_best,
        }

    # -- phase: finish --------------------------------------------------------------------------

    def finish(self, parts: RunParts, state: TrainState, progress: Progress, t_start: float) -> Dict[str, Any]:
        """Test at the last epoch, summary.json (sealed in last.pt first) and figures; every rank returns
        the summary."""
        progress.close()
        test_last = self.evaluate(parts, parts.bundle.test)
        summary = self.summary(parts, state, test_last, time.time() - t_start)
        if parts.dist.is_main:
            text = json_text(summary)
            self.run.seal(text, parts.manifest, parts.generators_used)
            self.run.write_summary(text)
            self.run.drop_previous()
            parts.tb.close()
            self.run.write_figures(log=parts.log)
        dist_utils.barrier(parts.dist)  # no rank reads this run's files (e.g. as M2m's g) before they exist
        for warning in summary.get("warnings", []):
            parts.log(f"WARNING: {warning}")
        parts.log(
            f"done: test bACC {percent(state.test_at_best['bacc'])} GM {percent(state.test_at_best['gm'])} "
            f"at best-val epoch {state.best_epoch + 1}; last epoch bACC {percent(test_last['bacc'])}; {self.run}"
        )
        return summary

    def summary(self, parts: RunParts, state: TrainState, test_last: Dict[str, Any], wall: float) -> Dict[str, Any]:
        """summary.json: the run, the test metrics at the reported and at the last epoch, how the epoch was
        chosen, timings, device, the method's own entries, the g's used and any warnings."""
        cfg, st, device = self.cfg, state, parts.device
        summary = {
            "run_dir": str(self.run),
            "recipe": cfg.recipe,
            "method": cfg.method,
            "loss": cfg.loss.name,
            "rebalance": cfg.rebalance.name,
            "seed": cfg.train.seed,
            "dataset": parts.bundle.name,
            "train_counts": parts.counts,
            "best_epoch": st.best_epoch + 1,
            "val_at_best": st.val_at_best,
            "test_at_best": st.test_at_best,
            "test_at_last": test_last,
            "selection": self.selection_summary(state),
            "train_seconds": st.train_seconds,
            "wall_seconds": wall,
            "device": str(device),
            "amp": parts.amp,
            "device_name": _device_name(device),
        }
        summary.update(parts.method.run_summary(st.history))
        if parts.generators_used:
            summary["generators"] = parts.generators_used
        if (note := self.earlier_best_note(state)) is not None:
            summary["warnings"] = summary.get("warnings", []) + [note]
        if parts.dist.is_main:
            summary["world_size"] = parts.dist.world_size
        return summary


def fit(
    cfg: Config,
    resume: bool = False,
    log: Optional[Log] = print,
    generators: Sequence[str] = (),
    progress_label: str = "",
) -> Dict[str, Any]:
    """Train one run as configured, in ``run.dir`` (else ``ROOT/RECIPE/METHOD/seedN``); returns (and writes)
    its summary.  See :class:`Trainer`.

    The engine does not train M2m's frozen g: give it ``generators`` (or ``m2m.generator``), or use
    :func:`major2minor.pipeline.train`, which trains and caches an ERM g first.
    """
    return Trainer(cfg, log, generators, progress_label).fit(resume)


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
