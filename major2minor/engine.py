"""The training loop, flat and top to bottom.

    for epoch in [start, epochs):
        lr      <- warm-up / step schedule of the recipe
        indices <- shuffle, or over-sample (1 / N_y) once the re-balancing is active (DRS, M2m: T0)
        for each batch:
            x, y  <- this rank's share of the global batch, float [0, 1] on the device: gathered from
                     the device-resident split + batched crop/flip, or decoded and augmented by
                     DataLoader workers for a streamed split (data/batches.py)
            x, y  <- rebalancer.transform_batch(f, x, y)          (M2m translates here)
            loss  <- mean_i  w_{y_i} * loss(f(x_i), y_i)           (w: RW / CB-RW / DRW weights)
            one SGD step           (the first epoch run times its first steps: epoch/run-time estimate)
        validate (whole split); on a new best validation bACC: test, save best.pt
        log a CSV row; save last.pt atomically (model, optimiser, every RNG state)
    test at the last epoch; write summary.json

Everything random draws from generators seeded from ``train.seed`` and stored in the checkpoint,
so a resumed run continues exactly where the interrupted one stopped.
"""
from __future__ import annotations

import math
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

from major2minor import distributed as dist_utils
from major2minor.checkpoint import (atomic_write_json, atomic_write_text, load_resume_checkpoint,
                                    save_checkpoint)
from major2minor.config import Config
from major2minor.data import DataBundle, Split, build_dataset, to_float
from major2minor.data.batches import batch_source, is_streamed, iter_uint8_batches
from major2minor.data.sampling import epoch_indices
from major2minor.losses import build_loss
from major2minor.metrics import classification_metrics
from major2minor.models import build_model
from major2minor.methods.base import Rebalancer
from major2minor.numerics import flushing_denormals
from major2minor.registry import REBALANCERS
from major2minor.rundir import check_resume_config, default_run_dir, environment, prepare_run_dir, write_csv
from major2minor.figures import write_run_figures
from major2minor.tblog import NullTBLogger, TBLogger

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
def predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int, device: torch.device,
            amp: str = "none") -> torch.Tensor:
    """Logits for a whole split, in large batches, model in eval mode (restored after)."""
    was_training = model.training
    model.eval()
    outs = []
    for xb in iter_uint8_batches(x, batch_size, device):     # a tensor, or streamed images (DataLoader)
        xb = to_float(xb)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp == "bf16"):
            outs.append(model(xb).float())
    model.train(was_training)
    return torch.cat(outs) if outs else torch.zeros(0)


def evaluate(model: torch.nn.Module, split: Split, num_classes: int, train_counts: List[int],
             device: torch.device, batch_size: int = 1024, amp: str = "none",
             dist: Optional[dist_utils.DistInfo] = None) -> Dict[str, Any]:
    """Metrics on the whole split; under torchrun each rank predicts x[rank::world] and the logits are
    gathered back in order, so every rank computes the same numbers on the whole split."""
    dist = dist or dist_utils.DistInfo()
    logits = predict(model, split.x[dist.rank::dist.world_size], batch_size, device, amp)
    logits = dist_utils.gather_in_order(logits, len(split), dist)
    y = split.y.to(logits.device)
    metrics = classification_metrics(y.cpu().numpy(), logits.argmax(1).cpu().numpy(), num_classes, train_counts)
    metrics["loss"] = float(torch.nn.functional.cross_entropy(logits, y)) if len(y) else float("nan")
    return metrics


def _duration(seconds: float) -> str:
    seconds = max(float(seconds), 0.0)
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class EpochEstimate:
    """Times the first training steps of the first epoch this process runs and tells how long an epoch
    and the rest of the run will take.

    The first ``warmup`` batches (loader start-up, kernel selection, compilation) are left out; the
    next ``measure`` batches (fewer in a short epoch) are timed, with one device sync at either end.
    Evaluation and, for M2m, translation from T0 on (M2m prints its own estimate then) come on top.
    """

    def __init__(self, n_batches: int, epochs_left: int, batch_size: int, device: torch.device,
                 warmup: int = 2, measure: int = 10):
        self.n_batches, self.epochs_left, self.batch_size, self.device = n_batches, epochs_left, batch_size, device
        self.warmup = min(warmup, max(n_batches - 1, 0))
        self.last = min(self.warmup + measure, n_batches) - 1     # the batch after which to report
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
        return (f"time estimate: {per_batch:.3f}s per training step ({self.batch_size / max(per_batch, 1e-9):.0f} "
                f"images/s, {b + 1 - self.warmup} steps timed) -> about {_duration(epoch)} per epoch of "
                f"{self.n_batches} steps and {_duration(epoch * self.epochs_left)} for the "
                f"{self.epochs_left} epoch(s) left, plus evaluation")


@dataclass
class RunContext:
    """What a re-balancing strategy may need beyond the counts (M2m: g, bounds, device)."""

    cfg: Config
    bundle: DataBundle
    device: torch.device
    run_dir: Optional[Path]
    log: Log
    build_model: Callable[[int], torch.nn.Module]
    rank: int = 0


@dataclass
class TrainState:
    epoch: int = 0                      # next epoch to run
    best_val_bacc: float = -1.0
    best_epoch: int = -1
    test_at_best: Dict[str, Any] = field(default_factory=dict)
    val_at_best: Dict[str, Any] = field(default_factory=dict)
    history: List[Dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0


def _kept(run_dir: Path, epoch: int) -> str:
    if epoch == 0:
        return "no checkpoint was written (the first epoch did not finish)."
    return f"the last good checkpoint {run_dir / 'last.pt'} (end of epoch {epoch}) is kept."


def _quiet(cfg: Config) -> Config:
    import copy
    quiet = copy.deepcopy(cfg)
    quiet.train.progress = "none"
    return quiet


def _merge_rank_stats(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Combine per-rank M2m statistics: counts and seconds add up, rates are recomputed."""
    rows = [r for r in rows if r]
    if len(rows) <= 1:
        return rows[0] if rows else {}
    from major2minor.methods.m2m import merge_stat_rows
    return merge_stat_rows(rows)


def _progress(cfg: Config, total: int, initial: int):
    from tqdm.auto import tqdm
    mode = cfg.train.progress
    disable = mode == "none" or (mode == "auto" and not sys.stderr.isatty())
    return tqdm(total=total, initial=initial, disable=disable, unit="batch", dynamic_ncols=True, leave=False)


def train(cfg: Config, resume: bool = False, log: Optional[Log] = print,
          run_dir: Optional[Path] = None) -> Dict[str, Any]:
    """Train one run as configured; returns (and writes) its summary.

    Subnormal floats are flushed to zero on the CPU while it runs (``train.flush_denormal``; the
    calling thread's own mode is restored afterwards, see ``major2minor.numerics``).
    """
    log = log or (lambda s: None)
    # first, before torch's CPU thread pool starts: its threads inherit the mode (numerics.py)
    with flushing_denormals(cfg.train.flush_denormal) as applied:
        if not applied:
            log(f"train.flush_denormal={str(cfg.train.flush_denormal).lower()} could not be applied to every CPU "
                "thread (the CPU lacks the mode, or torch's threads were started before this run); results are "
                "unaffected but speed may be lower: call major2minor.numerics.flush_denormals() at the start of "
                "the program.")
        return _train(cfg, resume, log, run_dir)


def _train(cfg: Config, resume: bool, log: Log, run_dir: Optional[Path]) -> Dict[str, Any]:
    t_start = time.time()
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(cfg)
    dist, device = dist_utils.setup(cfg.train.device)
    if not dist.is_main:   # one voice: rank 0 logs, writes files and draws figures
        log = lambda s: None  # noqa: E731
    status = dist_utils.broadcast_object(prepare_run_dir(run_dir, resume) if dist.is_main else None, dist)
    if status == "done":   # reuse a finished run only if it was run with these very settings
        import json

        import yaml
        saved = run_dir / "config.yaml"
        check_resume_config(run_dir, yaml.safe_load(saved.read_text()) if saved.exists() else None, cfg.to_dict())
        log(f"{run_dir}: finished already; reusing its summary")
        return json.loads((run_dir / "summary.json").read_text())
    if status == "resume":   # read (last.pt, or last.prev.pt if it is unreadable) and check it first
        resume_ckpt, _ = load_resume_checkpoint(run_dir, log)
        check_resume_config(run_dir, resume_ckpt.get("config"), cfg.to_dict())

    tb = TBLogger.from_config(cfg, run_dir) if dist.is_main else NullTBLogger()   # no-op unless run.tensorboard
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    if device.type == "cuda" and cfg.train.deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    seed = cfg.train.seed

    # --- data, model, loss, re-balancing ------------------------------------------------------
    bundle = build_dataset(cfg.data, seed if cfg.data.seed is None else cfg.data.seed)
    counts = bundle.train_counts
    rebalancer = REBALANCERS.get(cfg.rebalance.name)(cfg, counts)
    model = build_model_seeded(cfg, bundle, seed, device)
    ctx = RunContext(cfg, bundle, device, run_dir, log,
                     build_model=lambda s: build_model_seeded(cfg, bundle, s, device), rank=dist.rank)
    if hasattr(rebalancer, "setup"):
        rebalancer.setup(ctx, model)
    if is_streamed(bundle.train) and type(rebalancer).prepare_train is not Rebalancer.prepare_train:
        raise ValueError(f"rebalance.name={cfg.rebalance.name} rewrites the training set in memory; it cannot run "
                         "on streamed data (data.stream=true).")
    train_split = rebalancer.prepare_train(bundle.train, seed).to(device)   # SMOTE adds samples here
    loss_fn = build_loss(cfg, counts).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                                weight_decay=cfg.optim.weight_decay, nesterov=cfg.optim.nesterov)
    step_model = torch.compile(model) if cfg.train.compile else model
    # f as M2m translates with it: the plain module under DDP (translation needs input gradients only,
    # which must not trigger DDP's gradient all-reduce)
    translate_model = step_model
    if dist.enabled:
        import warnings
        # a weight with a size-1 dimension (e.g. a 1-channel first conv) can have grad strides that
        # differ from DDP's bucket view only in that dimension: harmless, but warned at every step
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        step_model = torch.nn.parallel.DistributedDataParallel(
            step_model, device_ids=[device.index] if device.type == "cuda" else None)
        translate_model = model

    # Separate generators per purpose, so e.g. M2m's draws do not shift the sampling stream.
    sample_gen = torch.Generator().manual_seed(seed)
    aug_gen = torch.Generator(device=device).manual_seed(seed + 1 + 1000 * dist.rank)   # per-rank stream
    state = TrainState()
    # the batches of each epoch: gathered from the device-resident split, or streamed from files
    source = batch_source(train_split, bundle.augment, aug_gen, seed, dist, device)

    if dist.is_main:
        atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
        atomic_write_json(run_dir / "manifest.json", bundle.manifest())
        atomic_write_json(run_dir / "environment.json", {**environment(), "world_size": dist.world_size})

    if status == "resume":
        ckpt = resume_ckpt
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        sample_gen.set_state(ckpt["rng"]["sample"])
        per_rank = ckpt.get("per_rank", [{"augment": ckpt["rng"]["augment"], "rebalancer": ckpt.get("rebalancer", {})}])
        if len(per_rank) != dist.world_size:
            raise ValueError(f"{run_dir} was saved by {len(per_rank)} process(es) but is resumed with "
                             f"{dist.world_size}; resume with the same torchrun --nproc_per_node.")
        aug_gen.set_state(per_rank[dist.rank]["augment"].to(aug_gen.get_state().device))
        rebalancer.load_state_dict(per_rank[dist.rank]["rebalancer"])
        state = TrainState(**ckpt["state"])
        log(f"resuming {run_dir} at epoch {state.epoch}")

    amp = cfg.train.amp == "bf16"
    bs = cfg.train.batch_size
    n_batches = math.ceil(len(train_split) / bs)
    if dist.enabled and bs < dist.world_size:
        raise ValueError(f"train.batch_size={bs} is the global batch and must be >= the number of processes "
                         f"({dist.world_size}).")
    bar = _progress(cfg if dist.is_main else _quiet(cfg), cfg.train.epochs * n_batches, state.epoch * n_batches)
    log(f"{cfg.method}: {bundle.name} train {len(bundle.train)} (counts {counts[:3]}...{counts[-3:]}), "
        f"val {len(bundle.val)}, test {len(bundle.test)}; model {cfg.model.name}; device {device}; "
        + (f"{dist.world_size} processes; " if dist.enabled else "")
        + (f"streamed by {train_split.x.workers} loader workers per process; " if source.streamed else "")
        + f"run dir {run_dir}")
    n_steps = len(train_split) // bs + int(len(train_split) % bs >= max(dist.world_size, 1))   # batches run
    estimate = EpochEstimate(n_steps, cfg.train.epochs - state.epoch, bs, device) \
        if state.epoch < cfg.train.epochs and n_steps > 0 else None

    for epoch in range(state.epoch, cfg.train.epochs):
        t_epoch = time.time()
        lr = learning_rate(cfg.optim, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        weights = rebalancer.class_weights(epoch)
        class_weight = None if weights is None else torch.as_tensor(weights, dtype=torch.float32, device=device)
        indices = epoch_indices(train_split.y, rebalancer.sample_weights(epoch), sample_gen)
        if hasattr(rebalancer, "on_epoch_start"):
            rebalancer.on_epoch_start(epoch, translate_model, train_split, bundle, n_batches)

        model.train()
        seen = torch.zeros(bundle.num_classes, dtype=torch.long, device=device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        # train.batch_size is the global batch: each rank gets its contiguous share of every global batch
        # (a final global batch smaller than the number of ranks is dropped on every rank alike), in
        # memory or decoded by DataLoader workers (data/batches.py)
        for b, (x, y) in enumerate(source.batches(indices, bs, epoch)):
            x, y = rebalancer.transform_batch(translate_model, x, y, epoch)
            if cfg.train.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = step_model(x)
            loss = loss_fn(logits.float(), y, class_weight).mean()
            # under DDP every rank must take the same decision, so the check sees the summed loss
            if not torch.isfinite(dist_utils.all_reduce_sum(loss.detach().clone(), dist) if dist.enabled else loss):
                raise NonFiniteLossError(
                    f"non-finite loss ({loss.item()}) at epoch {epoch + 1}/{cfg.train.epochs}, batch "
                    f"{b + 1}/{n_batches}; {_kept(run_dir, epoch)} Lower optim.lr or check the inputs for NaN/inf.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += torch.bincount(y, minlength=bundle.num_classes)
            loss_sum += loss.detach() * len(y)
            correct += (logits.argmax(1) == y).sum()
            bar.update(1)
            if estimate is not None and (msg := estimate.after_batch(b)):
                if bar.disable:
                    log(msg)
                else:
                    bar.write(msg)
        estimate = None

        # a step can leave inf/NaN weights with a finite loss (the last batch): never save such a model
        tensors = [(n, t) for n, t in model.state_dict().items() if t.is_floating_point()]
        if not bool(torch.stack([torch.isfinite(t).all() for _, t in tensors]).all()):   # one sync
            bad = [n for n, t in tensors if not bool(torch.isfinite(t).all())]
            raise NonFiniteLossError(f"non-finite weights ({bad[:3]}) after epoch {epoch + 1}/{cfg.train.epochs}; "
                                     f"{_kept(run_dir, epoch)} Lower optim.lr.")

        # --- evaluation on whole splits; model selection on validation bACC only ----------------
        for t in (seen, loss_sum, correct):            # what all ranks together saw this epoch
            dist_utils.all_reduce_sum(t, dist)
        dist_utils.broadcast_buffers(model, dist)     # evaluate (and save) rank 0's BN statistics
        n_seen = int(seen.sum())
        val = evaluate(model, bundle.val, bundle.num_classes, counts, device, cfg.train.eval_batch_size, cfg.train.amp, dist)
        improved = val["bacc"] >= state.best_val_bacc
        if improved:
            state.best_val_bacc, state.best_epoch = val["bacc"], epoch
            state.val_at_best = val
            state.test_at_best = evaluate(model, bundle.test, bundle.num_classes, counts, device,
                                          cfg.train.eval_batch_size, cfg.train.amp, dist)
        row: Dict[str, Any] = {
            "epoch": epoch, "lr": lr,
            "train_loss": float(loss_sum) / max(n_seen, 1), "train_acc": float(correct) / max(n_seen, 1),
            "val_loss": val["loss"], "val_acc": val["acc"], "val_bacc": val["bacc"], "val_gm": val["gm"],
            "best_epoch": state.best_epoch,
            "test_bacc_at_best": state.test_at_best.get("bacc"), "test_gm_at_best": state.test_at_best.get("gm"),
            "seen_per_class": seen.tolist(),
            "class_weights": None if weights is None else [round(float(w), 6) for w in weights],
        }
        row.update(_merge_rank_stats(dist_utils.all_gather_object(rebalancer.epoch_stats(), dist)))
        row["epoch_seconds"] = time.time() - t_epoch
        state.history.append(row)
        state.train_seconds += row["epoch_seconds"]
        state.epoch = epoch + 1

        per_rank = dist_utils.all_gather_object(
            {"augment": aug_gen.get_state().cpu(), "rebalancer": rebalancer.state_dict()}, dist)
        if dist.is_main:
            write_csv(run_dir / "log.csv", state.history)
            tb.log_row(epoch, row)
        ckpt = {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "epoch": epoch, "state": state.__dict__,
            "rng": {"sample": sample_gen.get_state(), "augment": aug_gen.get_state()},
            "rebalancer": rebalancer.state_dict(), "per_rank": per_rank,
            "counts": counts, "num_classes": bundle.num_classes, "model_name": cfg.model.name,
            "config": cfg.to_dict(),
        }
        if dist.is_main:
            if improved:
                save_checkpoint({**ckpt, "kind": "best"}, run_dir / "best.pt")
            save_checkpoint(ckpt, run_dir / "last.pt", keep_previous=True)
        extra = "".join(f" {k}={v:.3g}" for k, v in rebalancer.epoch_stats_brief(row).items()) \
            if hasattr(rebalancer, "epoch_stats_brief") else ""
        msg = (f"epoch {epoch + 1}/{cfg.train.epochs} lr {lr:.4g} loss {row['train_loss']:.4f} "
               f"val bACC {val['bacc']:.4f} GM {val['gm']:.4f}{' *' if improved else ''}{extra} "
               f"({row['epoch_seconds']:.1f}s)")
        bar.set_postfix_str(f"val bACC {val['bacc']:.3f}")
        if bar.disable:
            log(msg)
        else:
            bar.write(msg)
    bar.close()

    test_last = evaluate(model, bundle.test, bundle.num_classes, counts, device, cfg.train.eval_batch_size,
                         cfg.train.amp, dist)
    summary = {
        "run_dir": str(run_dir), "recipe": cfg.recipe, "method": cfg.method, "loss": cfg.loss.name,
        "rebalance": cfg.rebalance.name, "seed": seed, "dataset": bundle.name, "train_counts": counts,
        "best_epoch": state.best_epoch, "val_at_best": state.val_at_best,
        "test_at_best": state.test_at_best, "test_at_last": test_last,
        "train_seconds": state.train_seconds, "wall_seconds": time.time() - t_start,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
    }
    if hasattr(rebalancer, "run_summary"):
        summary["m2m"] = rebalancer.run_summary(state.history)
    if dist.is_main:
        summary["world_size"] = dist.world_size
        atomic_write_json(run_dir / "summary.json", summary)
        tb.close()
        write_run_figures(run_dir, log=log)
    dist_utils.barrier(dist)   # no rank reads this run's files (e.g. as M2m's g) before they exist
    log(f"done: test bACC {state.test_at_best['bacc']:.4f} GM {state.test_at_best['gm']:.4f} "
        f"at best-val epoch {state.best_epoch + 1}; last epoch bACC {test_last['bacc']:.4f}; {run_dir}")
    return summary
