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

import json
import math
import platform
import shutil
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from major2minor import distributed as dist_utils
from major2minor.checkpoint import (
    atomic_write_json,
    atomic_write_text,
    json_text,
    load_resume_checkpoint,
    save_checkpoint,
)
from major2minor.config import Config
from major2minor.data import DataBundle, Split, build_dataset, to_float
from major2minor.data.batches import batch_source, is_streamed, iter_uint8_batches
from major2minor.data.sampling import epoch_indices
from major2minor.figures import write_run_figures
from major2minor.losses import build_loss
from major2minor.methods.base import EpochContext, Rebalancer, RunContext
from major2minor.methods.generator import describe_generator, load_generators
from major2minor.metrics import classification_metrics
from major2minor.models import build_model
from major2minor.models.footprint import check_training_memory
from major2minor.numerics import ProcessSettings, choose_amp
from major2minor.registry import MODELS, REBALANCERS
from major2minor.rundir import (
    RunDirError,
    RunLock,
    check_resume_config,
    data_changes,
    default_run_dir,
    environment,
    prepare_run_dir,
    seal_finished,
    verify_finished,
    write_csv,
)
from major2minor.tblog import NullTBLogger, TBLogger
from major2minor.units import duration, percent

Log = Callable[[str], None]


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
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp == "bf16"):
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
    return 1 if MODELS.entry(cfg.model.name).meta.get("light") else 0


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


def check_same_data(run_dir: Path, manifest: Dict[str, Any]) -> None:
    """A run resumes only on the data it started with: its manifest's checksum (labels of every split and
    the first inputs) and class names must match the ones ``manifest.json`` recorded at the start."""
    path = run_dir / "manifest.json"
    if not path.exists():
        return
    changes = data_changes(json.loads(path.read_text()), manifest)
    if changes:
        raise RunDirError(
            f"cannot resume {run_dir}: its data changed since the run started ({'; '.join(changes)}). Resume it "
            "on the data it started with (see its manifest.json), or start a new run with run.dir=PATH."
        )


def _kept(run_dir: Path, epoch: int) -> str:
    if epoch == 0:
        return "no checkpoint was written (the first epoch did not finish)."
    return f"the last good checkpoint {run_dir / 'last.pt'} (end of epoch {epoch}) is kept."


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


class Trainer:
    """One run: ``Trainer(cfg, ...).fit(resume)`` trains it and returns its summary.

    Args:
        cfg: the resolved, validated configuration.
        run_dir: where the run's files go (default ``run.dir``, else ``ROOT/RECIPE/METHOD/seedN``).
        log: where progress lines go (``None``: nowhere); only rank 0 logs under torchrun.
        generators: paths of the frozen classifiers the method needs (M2m's g), when the method's
            own settings do not give them (the pipeline passes its cached ERM g here).
    """

    def __init__(
        self,
        cfg: Config,
        run_dir: Optional[Path] = None,
        log: Optional[Log] = print,
        generators: Sequence[str] = (),
        progress_label: str = "",
    ):
        self.cfg = cfg
        self.progress_label = progress_label  # the progress bar's name (the pipeline's g: "g (ERM)")
        self.run_dir = Path(run_dir) if run_dir is not None else default_run_dir(cfg)
        self.log = log or (lambda s: None)
        self.generator_paths = list(generators)

    def fit(self, resume: bool = False) -> Dict[str, Any]:
        """Open, set up, restore, train epoch by epoch, finish; process-wide settings restored after."""
        self.t_start = time.time()
        with ProcessSettings(self.cfg.train, threads=resolved_threads(self.cfg)) as settings, ExitStack() as held:
            self.dist, self.device = dist_utils.setup(self.cfg.train.device)
            settings.for_device(self.device, self.dist.enabled)
            if not self.dist.is_main:  # one voice: rank 0 logs, writes files and draws figures
                self.log = lambda s: None
            if not settings.flush_applied:
                self.log(
                    f"train.flush_denormal={str(self.cfg.train.flush_denormal).lower()} could not be applied "
                    "to every CPU thread (the CPU lacks the mode, or torch's threads were started before "
                    "this run); results are unaffected but speed may be lower: call "
                    "major2minor.numerics.flush_denormals() at the start of the program."
                )
            # the data first: a missing or unreadable file is reported as such, and reuse compares its manifest
            self.bundle = self.load_data()
            status = self.open_run_dir(resume, held)
            if status == "done":
                return self.reuse_finished()
            checkpoint = self.read_resume_checkpoint() if status == "resume" else None
            self.setup()
            if checkpoint is not None:
                self.restore(checkpoint)
            self.announce()
            # closed (and cleared) on the way out of an error or Ctrl-C too, before the caller prints why it
            # stopped: a bar closed later would put that line after the bar's text, or clear it away
            held.callback(self.bar.close)
            for epoch in range(self.state.epoch, self.cfg.train.epochs):
                t_epoch = time.time()
                totals = self.train_epoch(epoch)
                self.check_weights(epoch)
                self.evaluate_and_checkpoint(epoch, totals, t_epoch)
            return self.finish()

    # -- phase: open the run directory ----------------------------------------------------------

    def load_data(self) -> DataBundle:
        cfg = self.cfg
        return build_dataset(cfg.data, cfg.train.seed if cfg.data.seed is None else cfg.data.seed)

    def open_run_dir(self, resume: bool, held: ExitStack) -> str:
        """'new', 'resume' or 'done' (decided on rank 0, shared with every rank).  Rank 0, the only writer,
        holds the directory's lock until the run ends: a second writer is refused before it touches a file."""
        status = None
        if self.dist.is_main:
            held.enter_context(RunLock(self.run_dir))
            status = prepare_run_dir(self.run_dir, resume)
        self.status = dist_utils.broadcast_object(status, self.dist)
        return self.status

    def reuse_finished(self) -> Dict[str, Any]:
        """A finished run is reused only when it is the result asked for: trained with these result-deciding
        settings, on this data (manifest checksum and class names), with the g's given, and with its
        summary.json and config.yaml as it wrote them (:func:`~major2minor.rundir.verify_finished`)."""
        summary = verify_finished(self.run_dir, self.cfg.to_dict(), self.bundle.manifest(), self.generator_paths)
        self.log(f"{self.run_dir}: finished already (same settings, data and files); reusing its summary")
        if self.dist.is_main and not (self.run_dir / "curves.png").exists():  # killed after its summary
            write_run_figures(self.run_dir, log=self.log)
        return summary

    def read_resume_checkpoint(self) -> Dict[str, Any]:
        """last.pt, or last.prev.pt if it is unreadable; refused if it was made with other settings."""
        checkpoint, _ = load_resume_checkpoint(self.run_dir, self.log)
        check_resume_config(self.run_dir, checkpoint.get("config"), self.cfg.to_dict())
        return checkpoint

    # -- phase: set up --------------------------------------------------------------------------

    def setup(self) -> None:
        """Data, f, the method and its frozen g, the training split, loss, optimiser, random streams."""
        cfg, device, seed = self.cfg, self.device, self.cfg.train.seed
        self.tb = (
            TBLogger.from_config(cfg, self.run_dir, self.bundle.class_names) if self.dist.is_main else NullTBLogger()
        )
        check_splits(self.bundle)
        manifest = self.bundle.manifest()
        if self.status == "resume":
            check_same_data(self.run_dir, manifest)
        self.counts = self.bundle.train_counts
        method_cls = REBALANCERS.get(cfg.rebalance.name)
        self.method: Rebalancer = method_cls(cfg, self.counts)
        b = self.bundle  # estimated before anything is allocated: an impossible size is refused naming its setting
        check_training_memory(cfg, b.num_classes, b.input_shape, device, train_size=len(b.train))
        self.model = build_model_seeded(cfg, self.bundle, seed, device)
        # bf16 autocast where it pays (train.amp=auto): the choice and its reason go into environment.json
        self.amp, self.amp_reason = choose_amp(cfg.train.amp, device, MODELS.entry(cfg.model.name).meta.get("bf16", ()))
        paths = self.frozen_generator_paths(method_cls)
        self.generators_used = [describe_generator(p) for p in paths]
        generators = load_generators(paths, cfg, self.bundle, device)
        self.method.setup(
            RunContext(cfg, self.bundle, device, self.run_dir, self.log, self.dist.rank, generators, self.amp)
        )
        if is_streamed(self.bundle.train) and method_cls.rewrites_train:
            raise ValueError(
                f"rebalance.name={cfg.rebalance.name} rewrites the training set in memory; it cannot "
                "run on streamed data (data.stream=true)."
            )
        self.train_split = self.method.prepare_train(self.bundle.train, seed).to(device)  # SMOTE adds samples
        self.loss_fn = build_loss(cfg, self.counts).to(device)
        o = cfg.optim
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=o.nesterov
        )
        self.step_model, self.translate_model = self.wrap_model()
        # separate generators per purpose, so e.g. M2m's draws do not shift the sampling stream
        self.sample_gen = torch.Generator().manual_seed(seed)
        self.aug_gen = torch.Generator(device=device).manual_seed(seed + 1 + 1000 * self.dist.rank)  # per rank
        self.state = TrainState()
        # the batches of each epoch: gathered from the device-resident split, or streamed from files
        self.source = batch_source(self.train_split, self.bundle.augment, self.aug_gen, seed, self.dist, device)
        if self.dist.is_main:
            atomic_write_text(self.run_dir / "config.yaml", cfg.to_yaml())
            atomic_write_json(self.run_dir / "manifest.json", manifest)
            atomic_write_json(
                self.run_dir / "environment.json",
                {**environment(), "world_size": self.dist.world_size, "amp": self.amp, "amp_reason": self.amp_reason},
            )

    def frozen_generator_paths(self, method_cls: type) -> List[str]:
        """The g's to load: the method's own setting, else the paths given to the trainer."""
        wanted = method_cls.generator_paths(self.cfg)
        if wanted is None:
            return []
        paths = list(wanted) or self.generator_paths
        if not paths:
            raise ValueError(
                f"rebalance.name={self.cfg.rebalance.name} needs a frozen classifier g, but none was "
                "given: run it with major2minor.pipeline.train (as `m2m train` does), which trains "
                "and caches an ERM g first, or set m2m.generator=PATH."
            )
        return paths

    def wrap_model(self):
        """(the module the training step calls, the module methods translate with)."""
        step_model = torch.compile(self.model) if self.cfg.train.compile else self.model
        if not self.dist.enabled:
            return step_model, step_model
        # M2m translates with the plain module under DDP (translation needs input gradients only, which
        # must not trigger DDP's gradient all-reduce)
        ddp = torch.nn.parallel.DistributedDataParallel(
            step_model, device_ids=[self.device.index] if self.device.type == "cuda" else None
        )
        return ddp, self.model

    # -- phase: restore -------------------------------------------------------------------------

    def restore(self, ckpt: Dict[str, Any]) -> None:
        """Model, optimiser, sampler / augmentation / method random states and the loop state."""
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.sample_gen.set_state(ckpt["rng"]["sample"])
        per_rank = ckpt.get("per_rank", [{"augment": ckpt["rng"]["augment"], "rebalancer": ckpt.get("rebalancer", {})}])
        if len(per_rank) != self.dist.world_size:
            raise ValueError(
                f"{self.run_dir} was saved by {len(per_rank)} process(es) but is resumed with "
                f"{self.dist.world_size}; resume with the same torchrun --nproc_per_node."
            )
        mine = per_rank[self.dist.rank]
        self.aug_gen.set_state(mine["augment"].to(self.aug_gen.get_state().device))
        self.method.load_state_dict(mine["rebalancer"])
        self.state = TrainState(**ckpt["state"])
        self.state.adopt_overall_best()
        self.log(f"resuming {self.run_dir} at epoch {self.state.epoch}")

    def announce(self) -> None:
        """The run's one-line description; the progress bar and the time estimate of the first steps."""
        cfg, bs, dist = self.cfg, self.cfg.train.batch_size, self.dist
        n = len(self.train_split)
        if dist.enabled and bs < dist.world_size:
            raise ValueError(
                f"train.batch_size={bs} is the global batch and must be >= the number of processes ({dist.world_size})."
            )
        self.n_batches = math.ceil(n / bs)
        self.bar = _progress(
            cfg.train.progress if dist.is_main else "none",
            cfg.train.epochs * self.n_batches,
            self.state.epoch * self.n_batches,
            desc=self.progress_label,
        )
        counts, b = self.counts, self.bundle
        self.log(
            f"{cfg.method}: {b.name} train {len(b.train)} (counts {counts[:3]}...{counts[-3:]}), "
            f"val {len(b.val)}, test {len(b.test)}; model {cfg.model.name}; device {self.device} "
            f"({'bf16 autocast' if self.amp == 'bf16' else 'fp32'}; {self.amp_reason}); "
            + (f"{dist.world_size} processes; " if dist.enabled else "")
            + (f"streamed by {self.train_split.x.workers} loader workers per process; " if self.source.streamed else "")
            + f"run dir {self.run_dir}"
        )
        n_steps = n // bs + int(n % bs >= max(dist.world_size, 1))  # batches actually run
        self.estimate = (
            EpochEstimate(n_steps, cfg.train.epochs - self.state.epoch, bs, self.device)
            if self.state.epoch < cfg.train.epochs and n_steps > 0
            else None
        )

    # -- phase: one epoch -----------------------------------------------------------------------

    def train_epoch(self, epoch: int) -> EpochTotals:
        """One pass over this epoch's index stream, one SGD step per batch."""
        lr = learning_rate(self.cfg.optim, epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        weights = self.method.class_weights(epoch)
        class_weight = None if weights is None else torch.as_tensor(weights, dtype=torch.float32, device=self.device)
        indices = epoch_indices(self.train_split.y, self.method.sample_weights(epoch), self.sample_gen)
        self.method.on_epoch_start(
            epoch, EpochContext(self.translate_model, self.train_split, self.bundle, self.n_batches)
        )
        self.model.train()
        totals = EpochTotals(
            lr,
            weights,
            torch.zeros(self.bundle.num_classes, dtype=torch.long, device=self.device),
            torch.zeros((), device=self.device),
            torch.zeros((), device=self.device),
        )
        # train.batch_size is the global batch: each rank gets its contiguous share of every global batch
        # (a final global batch smaller than the number of ranks is dropped on every rank alike), in
        # memory or decoded by DataLoader workers (data/batches.py)
        for b, (x, y) in enumerate(self.source.batches(indices, self.cfg.train.batch_size, epoch)):
            self.train_step(x, y, epoch, b, class_weight, totals)
            self.bar.update(1)
            if self.estimate is not None and (msg := self.estimate.after_batch(b)):
                self.say(msg)
        self.estimate = None
        return totals

    def train_step(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        epoch: int,
        b: int,
        class_weight: Optional[torch.Tensor],
        totals: EpochTotals,
    ) -> None:
        """The method's batch transform, then loss, backward and step; sums stay on the device."""
        x, y = self.method.transform_batch(self.translate_model, x, y, epoch)
        if self.cfg.train.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp == "bf16"):
            logits = self.step_model(x)
        loss = self.method.batch_loss(self.loss_fn(logits.float(), y, class_weight), y, class_weight)
        # under DDP every rank must take the same decision, so the check sees the summed loss
        if not torch.isfinite(
            dist_utils.all_reduce_sum(loss.detach().clone(), self.dist) if self.dist.enabled else loss
        ):
            raise NonFiniteLossError(
                f"non-finite loss ({loss.item()}) at epoch {epoch + 1}/{self.cfg.train.epochs}, batch "
                f"{b + 1}/{self.n_batches}; {_kept(self.run_dir, epoch)} Lower optim.lr or check the inputs "
                "for NaN/inf."
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        totals.seen += torch.bincount(y, minlength=self.bundle.num_classes)
        totals.loss_sum += loss.detach() * len(y)
        totals.correct += (logits.argmax(1) == y).sum()

    def check_weights(self, epoch: int) -> None:
        """A step can leave inf/NaN weights with a finite loss (the last batch): never save such a model."""
        tensors = [(n, t) for n, t in self.model.state_dict().items() if t.is_floating_point()]
        if not bool(torch.stack([torch.isfinite(t).all() for _, t in tensors]).all()):  # one sync
            bad = [n for n, t in tensors if not bool(torch.isfinite(t).all())]
            raise NonFiniteLossError(
                f"non-finite weights ({bad[:3]}) after epoch {epoch + 1}/"
                f"{self.cfg.train.epochs}; {_kept(self.run_dir, epoch)} Lower optim.lr."
            )

    # -- phase: evaluate and checkpoint ---------------------------------------------------------

    def evaluate_and_checkpoint(self, epoch: int, totals: EpochTotals, t_epoch: float) -> None:
        """Validation on the whole split (model selection on its bACC only), test on a new best, the
        log row, best.pt / last.pt."""
        for t in (totals.seen, totals.loss_sum, totals.correct):  # what all ranks together saw this epoch
            dist_utils.all_reduce_sum(t, self.dist)
        dist_utils.broadcast_buffers(self.model, self.dist)  # evaluate (and save) rank 0's BN statistics
        val = self.evaluate(self.bundle.val)
        improved = self.track_best(epoch, val)
        row = self.epoch_row(epoch, totals, val)
        row["epoch_seconds"] = time.time() - t_epoch  # training and evaluation
        self.state.history.append(row)
        self.state.train_seconds += row["epoch_seconds"]
        self.state.epoch = epoch + 1
        self.save(epoch, row, improved)
        fields = self.method.progress_fields(row)
        if self.earlier_best_note() is not None:  # said in full once, at the end (summary.json warnings)
            fields["WARNING"] = f"pre-T0 epoch {self.state.overall_best_epoch + 1} better on val"
        extra = (" | " + ", ".join(f"{k} {v}" for k, v in fields.items())) if fields else ""
        self.bar.set_postfix_str(f"val bACC {percent(val['bacc'])}")
        self.say(
            f"epoch {epoch + 1}/{self.cfg.train.epochs} lr {totals.lr:.4g} loss {row['train_loss']:.4f} "
            f"val bACC {percent(val['bacc'])} GM {percent(val['gm'])}{' *' if improved else ''}{extra} "
            f"({row['epoch_seconds']:.1f}s)"
        )
        for warning in self.method.epoch_warnings(row):
            self.say(f"WARNING: {warning}")

    def selectable(self, epoch: int) -> bool:
        """May ``epoch`` (0-based) be the reported one?  With ``train.select=from_t0`` a method with a deferred
        phase (DRS, DRW, M2m, ...) is judged on its own epochs, ``epoch >= T0``: before T0 it is the plain model."""
        return self.cfg.train.select == "all" or not self.method.deferred or epoch >= self.cfg.train.deferred_epoch

    def track_best(self, epoch: int, val: Dict[str, Any]) -> bool:
        """Keep the whole-run best and the reported best (the best selectable epoch; a later epoch wins a tie);
        test on a new best of either.  True when the reported best moved to this epoch (best.pt is written)."""
        st, test = self.state, None
        if val["bacc"] >= st.overall_best_val_bacc:
            test = self.evaluate(self.bundle.test)
            st.overall_best_val_bacc, st.overall_best_epoch, st.test_at_overall_best = val["bacc"], epoch, test
        # a best left from epochs that may not be reported (a branched prefix's, before T0) is replaced
        improved = self.selectable(epoch) and (val["bacc"] >= st.best_val_bacc or not self.selectable(st.best_epoch))
        if improved:
            st.best_val_bacc, st.best_epoch, st.val_at_best = val["bacc"], epoch, val
            st.test_at_best = test if test is not None else self.evaluate(self.bundle.test)
        return improved

    def earlier_best_note(self) -> Optional[str]:
        """A warning when an epoch that may not be reported (before T0) was better on validation than the
        reported one: the method then did worse on validation than the plain model it started from."""
        st, t0 = self.state, self.cfg.train.deferred_epoch
        if st.best_epoch < 0 or self.selectable(st.overall_best_epoch) or st.overall_best_val_bacc <= st.best_val_bacc:
            return None
        return (
            f"the plain model before T0 was better on validation (bACC {percent(st.overall_best_val_bacc)} at epoch "
            f"{st.overall_best_epoch + 1}) than {self.cfg.method} at its reported epoch {st.best_epoch + 1} "
            f"({percent(st.best_val_bacc)}); the reported epoch is chosen from epoch {t0 + 1} on, where the method "
            f"acts (train.deferred_epoch={t0}, train.select=from_t0; train.select=all chooses from every epoch)"
        )

    def evaluate(self, split: Split) -> Dict[str, Any]:
        return evaluate(
            self.model,
            split,
            self.bundle.num_classes,
            self.counts,
            self.device,
            self.cfg.train.eval_batch_size,
            self.amp,
            self.dist,
        )

    def epoch_row(self, epoch: int, totals: EpochTotals, val: Dict[str, Any]) -> Dict[str, Any]:
        """The epoch's log.csv row: training and validation figures, then the method's statistics."""
        n_seen, st = int(totals.seen.sum()), self.state
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
        row.update(self.method.merge_epoch_stats(dist_utils.all_gather_object(self.method.epoch_stats(), self.dist)))
        return row

    def save(self, epoch: int, row: Dict[str, Any], improved: bool) -> None:
        """log.csv, TensorBoard, best.pt (on a new best) and last.pt, atomically, from rank 0."""
        per_rank = dist_utils.all_gather_object(
            {"augment": self.aug_gen.get_state().cpu(), "rebalancer": self.method.state_dict()}, self.dist
        )
        if not self.dist.is_main:
            return
        write_csv(self.run_dir / "log.csv", self.state.history)
        self.tb.log_row(row["epoch"], row)
        ckpt = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": epoch,
            "state": self.state.__dict__,
            "rng": {"sample": self.sample_gen.get_state(), "augment": self.aug_gen.get_state()},
            "rebalancer": self.method.state_dict(),
            "per_rank": per_rank,
            "counts": self.counts,
            "num_classes": self.bundle.num_classes,
            "model_name": self.cfg.model.name,
            "config": self.cfg.to_dict(),
        }
        if improved:
            save_checkpoint({**ckpt, "kind": "best"}, self.run_dir / "best.pt")
        save_checkpoint(ckpt, self.run_dir / "last.pt", keep_previous=True)

    def selection_summary(self) -> Dict[str, Any]:
        """How the reported epoch was chosen, and the whole-run best validation epoch beside it."""
        st = self.state
        return {
            "rule": self.cfg.train.select,
            "from_epoch": 1 if self.selectable(0) else self.cfg.train.deferred_epoch + 1,
            "overall_best_epoch": st.overall_best_epoch + 1,
            "val_bacc_at_overall_best": st.overall_best_val_bacc,
            "test_at_overall_best": st.test_at_overall_best,
        }

    def say(self, msg: str) -> None:
        """A progress line: above the bar when it is shown, else to the log."""
        if self.bar.disable:
            self.log(msg)
        else:
            self.bar.write(msg)

    # -- phase: finish --------------------------------------------------------------------------

    def finish(self) -> Dict[str, Any]:
        """Test at the last epoch, summary.json and figures; every rank returns the summary."""
        self.bar.close()
        test_last = self.evaluate(self.bundle.test)
        cfg, st, device = self.cfg, self.state, self.device
        summary = {
            "run_dir": str(self.run_dir),
            "recipe": cfg.recipe,
            "method": cfg.method,
            "loss": cfg.loss.name,
            "rebalance": cfg.rebalance.name,
            "seed": cfg.train.seed,
            "dataset": self.bundle.name,
            "train_counts": self.counts,
            "best_epoch": st.best_epoch + 1,
            "val_at_best": st.val_at_best,
            "test_at_best": st.test_at_best,
            "test_at_last": test_last,
            "selection": self.selection_summary(),
            "train_seconds": st.train_seconds,
            "wall_seconds": time.time() - self.t_start,
            "device": str(device),
            "amp": self.amp,
            "device_name": (
                torch.cuda.get_device_name(device)
                if device.type == "cuda"
                else platform.processor() or platform.machine()
            ),
        }
        summary.update(self.method.run_summary(st.history))
        if self.generators_used:
            summary["generators"] = self.generators_used
        if (note := self.earlier_best_note()) is not None:
            summary["warnings"] = summary.get("warnings", []) + [note]
        if self.dist.is_main:
            summary["world_size"] = self.dist.world_size
            text = json_text(summary)
            seal_finished(self.run_dir, text, self.bundle.manifest(), self.generators_used)
            atomic_write_text(self.run_dir / "summary.json", text)
            (self.run_dir / "last.prev.pt").unlink(missing_ok=True)  # a finished run resumes from nothing
            self.tb.close()
            write_run_figures(self.run_dir, log=self.log)
        dist_utils.barrier(self.dist)  # no rank reads this run's files (e.g. as M2m's g) before they exist
        for warning in summary.get("warnings", []):
            self.log(f"WARNING: {warning}")
        self.log(
            f"done: test bACC {percent(st.test_at_best['bacc'])} GM {percent(st.test_at_best['gm'])} "
            f"at best-val epoch {st.best_epoch + 1}; last epoch bACC {percent(test_last['bacc'])}; {self.run_dir}"
        )
        return summary


def fit(
    cfg: Config,
    resume: bool = False,
    log: Optional[Log] = print,
    run_dir: Optional[Path] = None,
    generators: Sequence[str] = (),
    progress_label: str = "",
) -> Dict[str, Any]:
    """Train one run as configured; returns (and writes) its summary.  See :class:`Trainer`.

    The engine does not train M2m's frozen g: give it ``generators`` (or ``m2m.generator``), or use
    :func:`major2minor.pipeline.train`, which trains and caches an ERM g first.
    """
    return Trainer(cfg, run_dir, log, generators, progress_label).fit(resume)
