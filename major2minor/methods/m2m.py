"""M2m: Major-to-minor translation (Kim, Jeong & Shin, CVPR 2020), exactly as design section 2.

For an (over-sampled) batch {(x_i, y_i)} with training counts N_c and N_max = max_c N_c:

1. **Slots.**  Entry i becomes a generation slot with probability ``1 - N_{y_i} / N_max``; its target
   class is k = y_i.
2. **Seeds.**  For a slot with target k, batch entry j has weight ``p_j = 1 - beta^max(N_{y_j} - N_k, 0)``;
   slots whose weights are all zero are skipped; one seed is drawn with probability proportional to p_j,
   and ``p_seed`` is kept.
3. **Translation.**  From ``x = clamp(x_seed + noise)`` take T steps
   ``x <- clamp(x - eta * grad / ||grad||_2)`` (per sample) on
   ``L(x) = CE(g(x), k) + lam * f_{k0}(x)`` (f_{k0}: f's raw logit of the seed class k0), both nets in
   eval mode.
4. **Acceptance.**  Accept iff ``softmax(g(x*))_k >= gamma`` and a Bernoulli(p_seed) draw succeeds.
   Accepted slots get input x* (label k); rejected slots keep their original sample.

Use it from any training loop::

    translator = M2mTranslator(g, class_counts, M2mConfig(), bounds=(0.0, 1.0),
                               rng=torch.Generator().manual_seed(0))
    x, y, stats = translator(f, x, y)      # then the usual loss / backward / step on (x, y)

Deliberate departures from the public code (alinlab/M2m), each with its reason:

* The slot probability divides by ``N_max``, not ``N_0`` (the public code assumes class 0 is the
  largest, which is false on CelebA-5).
* The translation loss is summed over slots instead of averaged.  Each sample's gradient is
  L2-normalised, so the step is the same up to the public code's 1e-10 guard; summing makes every
  slot's translation independent of how many other slots are translated (see the next point).
* The Bernoulli(p_seed) draw does not depend on the translation, so it is drawn *before* translating
  and slots it rejects are not translated at all (``m2m.translate_rejected=false``, the default).
  This is exact in distribution: the random-start noise is still drawn for every valid slot (the
  official noise is renormalised across the whole generation batch, so drawing it for a subset would
  change its size) and then subset; the accepted set and the accepted inputs are the same as with
  ``translate_rejected=true`` (tested).
* f's probabilities of the seed and target classes in the statistics are measured with f in eval
  mode right after translation (the public code reads them from the training forward pass).
* M2m-No-Reject (``m2m.reject=false``) accepts every translated slot: neither the gamma test nor the
  Bernoulli draw rejects.
* For a cosine head (LDAM-M2m) f's probabilities in the statistics are ``softmax(s * cosine)``, as
  LDAM's loss sees them; the translation loss uses f's raw logit, as the public code.

Speed shortcuts that do not change results beyond rounding (each tested; benchmarks/README.md):
g's and f's BatchNorm folded into their convolutions for the translation (both nets are in eval
mode there; f's folded copy is refreshed from its weights every batch), Bernoulli-rejected slots not
translated (above), f's statistics computed on accepted samples only, and on a GPU with cuDNN's
autotuner the translation batch padded with filler rows to a multiple of 32 (rows are independent).
"""

from __future__ import annotations

import copy
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from major2minor.config import Check, ConfigError, Interval, OneOf
from major2minor.data.core import to_float
from major2minor.display import duration, percent
from major2minor.methods.base import (
    EpochContext,
    Knob,
    Rebalancer,
    RunContext,
    g_need,
    inverse_frequency,
    register_method,
)
from major2minor.metrics import as_labels
from major2minor.models.fold import FoldedMirror, conv_bn_pairs, fold_batchnorm
from major2minor.numerics import autocast
from major2minor.registry import LOSSES


@dataclass
class M2mConfig:
    """M2m's knobs (``m2m.*``); defaults of the public CIFAR-10-LT recipe (design section 2)."""

    beta: float = 0.999  # seed weight p_j = 1 - beta^max(N_yj - N_k, 0)
    lam: float = 0.5  # weight of f's seed-class logit in the translation loss
    gamma: float = 0.9  # acceptance threshold on g's target-class probability
    step_size: float = 0.1  # eta, L2-normalised gradient step
    steps: int = 10  # T, gradient steps per translation
    noise: str = "official"  # official | per-sample | none
    noise_radius: float = 0.5
    generator: List[str] = field(default_factory=list)  # run dirs / checkpoints of g (several = ensemble)
    self_generator: bool = False  # M2m-Self: f itself plays g
    reject: bool = True  # False = M2m-No-Reject (keep every translated sample)
    # speed options (same results up to rounding):
    translate_rejected: bool = False  # also translate slots the Bernoulli draw rejects (slower)
    fold_generator: bool = True  # fold g's BatchNorm into its convolutions (g is frozen)
    pad_multiple: int = 0  # pad translation batches to a multiple (0 = 32 with cudnn.benchmark, else none)
    fold_classifier: bool = True  # translate through a BN-folded copy of f, refreshed every batch

    # speed options: the same translations up to rounding (each tested), so not part of a result's identity
    neutral: ClassVar[Tuple[str, ...]] = ("translate_rejected", "fold_generator", "pad_multiple", "fold_classifier")
    checks: ClassVar[Dict[str, Check]] = {
        "beta": Interval(0, 1, closed="left", hint="the paper uses 0.999; smaller values accept more seeds"),
        "lam": Interval(0, None, hint="the weight of f's seed-class logit; the paper uses 0.5"),
        "gamma": Interval(0, 1, hint="g's target-class probability needed to accept; the paper uses 0.9"),
        "step_size": Interval(0, None, closed="neither", hint="eta, the L2 length of each step; the paper uses 0.1"),
        "steps": Interval(1, 1000, hint="T, gradient steps per translation; the paper uses 10"),
        "noise": OneOf(("official", "per-sample", "none")),
        "noise_radius": Interval(0, None, hint="the paper uses 0.5"),
        "pad_multiple": Interval(0, None, hint="0 = automatic: 32 on a GPU with cudnn.benchmark on, else none"),
    }


# ------------------------------------------------------------------------------------------------
# statistics


@dataclass
class BatchStats:
    """What one translated batch did (tensors stay on the device until read)."""

    slots: int  # valid generation slots (weights not all zero)
    translated: int  # slots actually translated
    accepted_per_class: torch.Tensor  # (C,) accepted slots per target class
    slots_per_class: torch.Tensor  # (C,) valid slots per target class
    g_target_prob_sum: torch.Tensor  # sum over accepted of softmax(g(x*))_k
    f_seed_prob_sum: torch.Tensor  # sum over accepted of softmax(f(x*))_{k0}
    f_target_prob_sum: torch.Tensor  # sum over accepted of softmax(f(x*))_k
    seconds: float

    @property
    def accepted(self) -> int:
        return int(self.accepted_per_class.sum())


@dataclass
class M2mEpochStats:
    """Per-epoch statistics of design section 2, summed over batches."""

    num_classes: int
    slots: int = 0
    translated: int = 0
    accepted_per_class: Optional[torch.Tensor] = None
    slots_per_class: Optional[torch.Tensor] = None
    g_target_prob_sum: float = 0.0
    f_seed_prob_sum: float = 0.0
    f_target_prob_sum: float = 0.0
    seconds: float = 0.0
    _sums: List[torch.Tensor] = field(default_factory=list)

    def add(self, b: BatchStats) -> None:
        self.slots += b.slots
        self.translated += b.translated
        self.seconds += b.seconds
        acc = b.accepted_per_class.detach()
        self.accepted_per_class = acc.clone() if self.accepted_per_class is None else self.accepted_per_class + acc
        sl = b.slots_per_class.detach()
        self.slots_per_class = sl.clone() if self.slots_per_class is None else self.slots_per_class + sl
        self._sums.append(torch.stack([b.g_target_prob_sum, b.f_seed_prob_sum, b.f_target_prob_sum]).detach())

    def as_row(self) -> Dict[str, Any]:
        acc = self.accepted_per_class.cpu().tolist() if self.accepted_per_class is not None else [0] * self.num_classes
        n_acc = int(sum(acc))
        sums = torch.stack(self._sums).sum(0).cpu().tolist() if self._sums else [0.0, 0.0, 0.0]
        per = lambda s: s / n_acc if n_acc else None
        return {
            "m2m_slots": self.slots,
            "m2m_translated": self.translated,
            "m2m_accepted": n_acc,
            "m2m_acceptance": n_acc / self.slots if self.slots else None,
            "m2m_g_target_prob": per(sums[0]),
            "m2m_f_seed_prob": per(sums[1]),
            "m2m_f_target_prob": per(sums[2]),
            "m2m_seconds": self.seconds,
            "m2m_accepted_per_class": acc,
        }


def merge_stat_rows(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Combine the epoch rows of several ranks: counts and seconds add up, rates are recomputed."""
    slots = sum(r["m2m_slots"] for r in rows)
    accepted = sum(r["m2m_accepted"] for r in rows)

    def weighted(key: str):
        parts = [(r[key], r["m2m_accepted"]) for r in rows if r[key] is not None]
        return sum(v * n for v, n in parts) / accepted if accepted else None

    return {
        "m2m_slots": slots,
        "m2m_translated": sum(r["m2m_translated"] for r in rows),
        "m2m_accepted": accepted,
        "m2m_acceptance": accepted / slots if slots else None,
        "m2m_g_target_prob": weighted("m2m_g_target_prob"),
        "m2m_f_seed_prob": weighted("m2m_f_seed_prob"),
        "m2m_f_target_prob": weighted("m2m_f_target_prob"),
        "m2m_seconds": max(r["m2m_seconds"] for r in rows),  # ranks translate in parallel
        "m2m_accepted_per_class": [sum(v) for v in zip(*(r["m2m_accepted_per_class"] for r in rows))],
    }


# ------------------------------------------------------------------------------------------------
# the translator: the public API


@dataclass
class SlotPlan:
    """One batch's generation slots and the draws made for them before translating (steps 1-2)."""

    slot_idx: torch.Tensor  # (S,) batch positions that are valid slots
    target: torch.Tensor  # (S,) target class k of each slot (= the slot's own label)
    seed_idx: torch.Tensor  # (S,) batch position of each slot's seed
    seed_class: torch.Tensor  # (S,) the seed's class k0
    bern: torch.Tensor  # (S,) the Bernoulli(p_seed) acceptance draw
    noise: torch.Tensor  # (S, ...) the random start
    work: torch.Tensor  # indices into the slots that are translated (Bernoulli-accepted, unless told otherwise)


def random_start(
    shape: Tuple[int, ...], mode: str, radius: float, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """Random-start noise for a generation batch of ``shape`` (n, ...).

    ``official``: ``(U[-0.5, 0.5]).renorm(p=2, dim=1, maxnorm=radius)`` as the public code, which bounds
    the L2 norm of each *channel slice across the whole generation batch* (so per-sample noise shrinks
    as the batch grows).  ``per-sample``: each sample's noise has L2 norm at most ``radius``.
    ``none``: zeros.
    """
    if mode == "none" or shape[0] == 0:
        return torch.zeros(shape, device=device)
    u = torch.rand(shape, generator=generator, device=device) - 0.5
    if mode == "official":
        return u.renorm(p=2, dim=1, maxnorm=radius) if u.dim() > 1 else u.renorm(p=2, dim=0, maxnorm=radius)
    if mode == "per-sample":
        return u.renorm(p=2, dim=0, maxnorm=radius)
    raise ValueError(f"m2m.noise='{mode}' is not allowed; use official, per-sample or none.")


def slot_probability(counts: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """P(entry i is a generation slot) = 1 - N_{y_i} / N_max (N_max, not N_0: see the module notes)."""
    return 1.0 - counts[y] / counts.max()


def seed_weights(counts: torch.Tensor, y: torch.Tensor, target: torch.Tensor, beta: float) -> torch.Tensor:
    """(slots, batch) matrix p[s, j] = 1 - beta^max(N_{y_j} - N_{target_s}, 0)."""
    delta = F.relu(counts[y][None, :] - counts[target][:, None])
    return 1.0 - torch.pow(torch.as_tensor(beta, dtype=delta.dtype, device=delta.device), delta)


def _pad(t: torch.Tensor, rows: int) -> torch.Tensor:
    """t with ``rows`` zero rows appended (index 0, class 0, zero noise: any valid filler)."""
    return t if rows == 0 else torch.cat([t, t.new_zeros((rows, *t.shape[1:]))])


class _Unfolded:
    """Stand-in for FoldedMirror when f has nothing to fold (or cannot be traced): f itself."""

    def __init__(self, net: nn.Module):
        self.source = net

    def refresh(self) -> nn.Module:
        return self.source


def _eval_mode(nets: Sequence[nn.Module]) -> List[bool]:
    modes = [n.training for n in nets]
    for n in nets:
        n.eval()
    return modes


def _renamed_rng(rng: Optional[torch.Generator], generator: Optional[torch.Generator]) -> Optional[torch.Generator]:
    """``rng``, or ``generator`` (its former name, kept working with a DeprecationWarning)."""
    if generator is None:
        return rng
    if rng is not None:
        raise TypeError("give rng= only (generator= is its former name), not both")
    warnings.warn(
        "M2mTranslator: generator= is renamed rng= (g is the generator network)", DeprecationWarning, stacklevel=3
    )
    return generator


class M2mTranslator:
    """Translate majority samples into minority classes for one batch at a time.

    Args:
        g: the frozen classifier(s) trained with ERM; a list means M2m-Ensemble (mean of softmax
            probabilities for the loss, -log of the mean, and for the gamma test); None means M2m-Self
            (f plays g).  The translator works on its own frozen copy of each g (``copy.deepcopy``,
            then eval mode and ``requires_grad_(False)``; BatchNorm folded when ``fold_generator``), so
            the caller's g is left as it was (training mode, gradient flags); this costs the memory
            of one copy of g.
        counts: training count per class N_c.
        config: the knobs (beta, lam, gamma, step_size, steps, noise, noise_radius, reject,
            translate_rejected); see :class:`M2mConfig`.
        bounds: (low, high) of the input space for the clamp, or None for unbounded inputs.
        rng: the torch.Generator (on the batch's device) every random draw comes from (``generator=``,
            its former name, still works and warns).
        amp: "bf16" to run the networks under bf16 autocast.
        f_logit_scale: multiplies f's logits before the softmax of the f-probability *statistics* only
            (LDAM's scale s for a cosine head, whose raw logits lie in [-1, 1]); the translation uses
            f's raw logit, as the public code.

    Calling ``translator(f, x, y)`` returns ``(x_new, y_new, BatchStats)``; x and y are not modified.
    """

    def __init__(
        self,
        g: Union[nn.Module, Sequence[nn.Module], None],
        counts: Sequence[int],
        config: Optional[M2mConfig] = None,
        bounds: Optional[Tuple[float, float]] = (0.0, 1.0),
        rng: Optional[torch.Generator] = None,
        amp: str = "none",
        channels_last: bool = False,
        f_logit_scale: float = 1.0,
        *,
        generator: Optional[torch.Generator] = None,
    ):
        self.cfg = config or M2mConfig()
        # the g networks (None: M2m-Self, f plays g)
        self.g_models: Optional[List[nn.Module]] = None
        if g is not None:
            nets = list(g) if isinstance(g, (list, tuple)) else [g]
            # the translator's own frozen copies (eval mode, no gradients, never in an optimiser): the
            # caller's g keeps its training mode and requires_grad flags, and is never translated with
            self.g_models = [copy.deepcopy(net).eval().requires_grad_(False) for net in nets]
            if self.cfg.fold_generator:  # one conv kernel instead of conv + BN per layer
                self.g_models = [fold_batchnorm(net) for net in self.g_models]
        self.channels_last = channels_last
        self._mirror = None  # BN-folded copy of f (m2m.fold_classifier), built at the first call
        self.counts = torch.as_tensor(list(counts), dtype=torch.float32)
        if (self.counts <= 0).any():
            raise ValueError(f"every class needs a positive training count for M2m, got {list(counts)}.")
        self.bounds = bounds
        self.rng = _renamed_rng(rng, generator)  # the random generator every draw comes from
        self.amp = amp
        self.f_logit_scale = f_logit_scale

    # -- pieces ------------------------------------------------------------------------------------

    def eval_classifier(self, f: nn.Module) -> nn.Module:
        """The network that plays f during translation: f itself, or (``m2m.fold_classifier``) an
        eval-mode copy with BatchNorm folded into the convolutions, refreshed from f's current weights.

        f is in eval mode throughout the translation, so the copy computes the same function up to
        rounding; it saves the BatchNorm kernels of 2T passes (forward and input-backward) per batch.
        """
        if not self.cfg.fold_classifier:
            return f
        net = getattr(f, "_orig_mod", f)  # torch.compile wraps the module
        if self._mirror is None or self._mirror.source is not net:
            try:
                self._mirror = FoldedMirror(net) if conv_bn_pairs(net) else _Unfolded(net)
            except Exception as exc:  # fx cannot trace or fold a user model: translate through f itself
                warnings.warn(
                    f"m2m.fold_classifier: cannot fold {type(net).__name__} ({type(exc).__name__}: "
                    f"{exc}); translating through f unfolded (slower, same results).",
                    stacklevel=2,
                )
                self._mirror = _Unfolded(net)
        return self._mirror.refresh()

    def _clamp(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.bounds is None else x.clamp(self.bounds[0], self.bounds[1])

    def g_log_probs(self, f: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """log of g's class probabilities; for an ensemble, log of the mean of the members' softmax."""
        nets = self.g_models if self.g_models is not None else [f]
        with autocast(x.device, self.amp):
            logits = [n(x).float() for n in nets]
        if len(logits) == 1:
            return F.log_softmax(logits[0], 1)
        return torch.stack([F.softmax(z, 1) for z in logits]).mean(0).clamp_min(1e-12).log()

    def slot_and_seed(self, y: torch.Tensor, gen: Optional[torch.Generator]):
        """Steps 1-2: slot indices, their targets, their seeds and p_seed (every draw from ``gen``)."""
        counts = self.counts.to(y.device)
        is_slot = torch.bernoulli(slot_probability(counts, y), generator=gen).bool()
        slot_idx = is_slot.nonzero().view(-1)
        target = y[slot_idx]
        p = seed_weights(counts, y, target, self.cfg.beta)
        valid = p.sum(1) > 0  # a slot with no possible seed is skipped
        slot_idx, target, p = slot_idx[valid], target[valid], p[valid]
        if len(slot_idx) == 0:
            return slot_idx, target, slot_idx.new_zeros(0), p.new_zeros(0)
        seed_idx = torch.multinomial(p, 1, replacement=True, generator=gen).view(-1)
        p_seed = p.gather(1, seed_idx[:, None]).view(-1)
        return slot_idx, target, seed_idx, p_seed

    def translate(
        self, f: nn.Module, x0: torch.Tensor, target: torch.Tensor, seed_class: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """Step 3: T normalised-gradient steps on CE(g(x), k) + lam * f_{k0}(x) from clamp(x0 + noise).

        M2m-Self (f plays g) computes f's logits once per step for both terms: the same loss, half the
        passes through f (the gradient differs from two separate passes only by rounding).
        """
        x = self._clamp(x0 + noise).detach()
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        cfg = self.cfg
        for _ in range(cfg.steps):
            x.requires_grad_(True)
            if self.g_models is None:  # M2m-Self: one forward of f gives both terms
                with autocast(x.device, self.amp):
                    f_logits = f(x).float()
                loss = F.nll_loss(F.log_softmax(f_logits, 1), target, reduction="sum")
            else:
                loss = F.nll_loss(self.g_log_probs(f, x), target, reduction="sum")  # sum_s CE(g(x_s), k_s)
                if cfg.lam != 0:
                    with autocast(x.device, self.amp):
                        f_logits = f(x).float()
            if cfg.lam != 0:
                loss = loss + cfg.lam * f_logits.gather(1, seed_class[:, None]).sum()
            (grad,) = torch.autograd.grad(loss, [x])
            norm = grad.flatten(1).norm(dim=1).view(-1, *([1] * (x.dim() - 1)))
            x = self._clamp(x.detach() - cfg.step_size * grad / (norm + 1e-10))
        return x.detach()

    def padding(self, n: int, device: torch.device) -> int:
        """Filler rows that round a translation batch of n up to ``m2m.pad_multiple``.

        0 = automatic: 32 on a GPU with ``torch.backends.cudnn.benchmark`` on, where every new batch
        size costs an algorithm search (measured: 4.6 s -> 0.31 s per ImageNet-LT batch); otherwise
        none, since filler rows are extra work.
        """
        autotuned = device.type == "cuda" and torch.backends.cudnn.benchmark
        multiple = self.cfg.pad_multiple or (32 if autotuned else 1)
        return (-n) % multiple

    # -- the call ------------------------------------------------------------------------------------

    def plan(self, x: torch.Tensor, y: torch.Tensor, gen: Optional[torch.Generator]) -> Optional[SlotPlan]:
        """Steps 1-2 and every draw that does not depend on the translation, in the order they are drawn;
        None when the batch has no valid slot.

        The Bernoulli(p_seed) acceptance and the random start are drawn for every valid slot before
        translating: neither depends on the translation, so skipping the slots the draw rejects is exact.
        """
        cfg = self.cfg
        slot_idx, target, seed_idx, p_seed = self.slot_and_seed(y, gen)
        if len(slot_idx) == 0:
            return None
        bern = torch.bernoulli(p_seed, generator=gen).bool()
        noise = random_start(tuple(x[seed_idx].shape), cfg.noise, cfg.noise_radius, gen, x.device)
        todo = bern if cfg.reject and not cfg.translate_rejected else torch.ones_like(bern)
        return SlotPlan(slot_idx, target, seed_idx, y[seed_idx], bern, noise, todo.nonzero().view(-1))

    def translate_and_judge(self, f: nn.Module, x: torch.Tensor, plan: SlotPlan):
        """Steps 3-4 for the planned slots, f and g in eval mode (restored after): the translated inputs,
        g's target-class probability, the accepted rows (indices into ``plan.work``) and f's class
        probabilities on the accepted rows (for the statistics)."""
        cfg, work = self.cfg, plan.work
        nets = [f] + (self.g_models or [])
        modes = _eval_mode(nets)
        try:
            f_eval = self.eval_classifier(f)
            # padded to a few distinct sizes (GPU): every row is translated independently of the others
            # (eval mode, summed loss, per-row step), so filler rows change nothing and are dropped after
            n_work, pad = len(work), self.padding(len(work), x.device)
            src, tgt, cls = (_pad(t, pad) for t in (plan.seed_idx[work], plan.target[work], plan.seed_class[work]))
            x_star = self.translate(f_eval, x[src], tgt, cls, _pad(plan.noise[work], pad))
            with torch.no_grad():
                g_prob = self.g_log_probs(f_eval, x_star).exp().gather(1, tgt[:, None]).view(-1)[:n_work]
            x_star = x_star[:n_work]
            if cfg.reject:
                accept = (g_prob >= cfg.gamma) & plan.bern[work]
            else:
                accept = torch.ones_like(g_prob, dtype=torch.bool)
            accepted = accept.nonzero().view(-1)
            # f's probabilities feed only the statistics of accepted samples: one forward of those alone
            f_prob = x_star.new_zeros((0, len(self.counts)))
            if len(accepted):
                with torch.no_grad(), autocast(x.device, self.amp):
                    f_prob = F.softmax(self.f_logit_scale * f_eval(x_star[accepted]).float(), 1)
        finally:
            for net, mode in zip(nets, modes):
                net.train(mode)
        return x_star, g_prob, accepted, f_prob

    def __call__(
        self,
        f: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        rng: Optional[torch.Generator] = None,
        *,
        generator: Optional[torch.Generator] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, BatchStats]:
        """Translate one batch: ``(x_new, y_new, stats)``; accepted slots get x* and their target class,
        the others keep their sample.  ``x`` and ``y`` are not modified; ``y`` may be of any integer type
        (``y_new`` is int64)."""
        t0 = time.perf_counter()
        y = as_labels(y, "y")
        rng = _renamed_rng(rng, generator)
        gen = rng if rng is not None else self.rng
        num_classes = len(self.counts)
        x_new, y_new = x.clone(), y.clone()
        plan = self.plan(x, y, gen)
        if plan is None:
            zeros, z = torch.zeros(num_classes, dtype=torch.long, device=y.device), torch.zeros((), device=x.device)
            return (
                x_new,
                y_new,
                BatchStats(0, 0, zeros, zeros.clone(), z, z.clone(), z.clone(), time.perf_counter() - t0),
            )
        x_star, g_prob, accepted, f_prob = self.translate_and_judge(f, x, plan)
        rows = plan.work[accepted]
        dest, acc_t = plan.slot_idx[rows], plan.target[rows]
        x_new[dest] = x_star[accepted].to(x_new.dtype)
        y_new[dest] = acc_t
        stats = BatchStats(
            slots=len(plan.slot_idx),
            translated=len(plan.work),
            accepted_per_class=torch.bincount(acc_t, minlength=num_classes),
            slots_per_class=torch.bincount(plan.target, minlength=num_classes),
            g_target_prob_sum=g_prob[accepted].sum(),
            f_seed_prob_sum=f_prob.gather(1, plan.seed_class[rows][:, None]).sum(),
            f_target_prob_sum=f_prob.gather(1, acc_t[:, None]).sum(),
            seconds=time.perf_counter() - t0,
        )
        return x_new, y_new, stats


# ------------------------------------------------------------------------------------------------
# the engine's re-balancing strategy

#: Below this acceptance rate M2m changes almost no batch entry: the run is effectively DRS.
LOW_ACCEPTANCE = 0.02
LOW_ACCEPTANCE_ADVICE = (
    "the run is effectively DRS (over-sampling alone). To accept more: lower m2m.beta (seed weights "
    "1 - beta^(N_seed - N_target) are tiny when classes differ by few samples: try 0.99 or 0.9), raise "
    "m2m.step_size (eta: how far the T steps move an input), or lower m2m.gamma (the confidence g needs); "
    "`m2m tune RECIPE` searches them on the validation split."
)

#: A translation costing more than this many plain training steps gets a warning before training
#: (the paper's T = 10 costs about 5-25x on a CPU or GPU; see benchmarks/README.md).
SLOW_TRANSLATION_RATIO = 100


def _timed(fn, device: torch.device) -> float:
    t = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t


def _plain_step_seconds(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Forward and backward of a copy of f on a batch (the copy, so f's weights, gradients and BatchNorm
    statistics are untouched); the second of two runs, the first one pays the start-up."""
    net = copy.deepcopy(getattr(model, "_orig_mod", model)).train()

    def step():
        F.cross_entropy(net(x).float(), y).backward()

    step()
    return _timed(step, x.device)


@register_method("m2m", preset=False)
class M2mRebalancer(Rebalancer):
    """M2m: ERM until T0, then over-sampling (1/N_y) with major-to-minor translation of each batch."""

    deferred = True
    label = "M2m"
    config_section = "m2m"
    config_class = M2mConfig
    # m2m.steps (T, the cost of a translation) stays the recipe's unless given as a range
    search_space = (
        Knob("m2m.beta", "choice", choices=(0.9, 0.99, 0.999)),
        Knob("m2m.lam", "float", 0.01, 1.0, log=True),
        Knob("m2m.gamma", "float", 0.5, 0.99),
        Knob("m2m.step_size", "float", 0.05, 5.0, log=True),
    )
    per_run_keys = ("m2m.generator",)

    def __init__(self, cfg, counts):
        super().__init__(cfg, counts)
        self.translator: Optional[M2mTranslator] = None
        self.epoch_acc = M2mEpochStats(self.num_classes)
        self.rng: Optional[torch.Generator] = None
        self.estimated = False
        self.warned = False

    @classmethod
    def check_config(cls, cfg) -> None:
        m = cfg.m2m
        if m.self_generator and m.generator:
            raise ConfigError(
                "m2m.self_generator=true (M2m-Self: f plays g) conflicts with m2m.generator="
                f"{m.generator}; set one of them."
            )
        for g in [] if m.self_generator else m.generator:
            if not Path(g).expanduser().exists():
                raise ConfigError(
                    f"m2m.generator={g} does not exist; give a finished run directory (its best.pt "
                    "is g), a checkpoint file, or an official M2m checkpoint; or leave "
                    "m2m.generator empty to train and cache an ERM g first."
                )

    @classmethod
    def acceptance(cls, summary: Dict[str, Any]) -> Optional[float]:
        return (summary.get("m2m") or {}).get("acceptance")

    @classmethod
    def generator_paths(cls, cfg) -> Optional[List[str]]:
        """g: the given ``m2m.generator`` paths (several = M2m-Ensemble), none for M2m-Self (f plays g),
        else ``[]``: an ERM run of the same recipe, trained and cached by the pipeline."""
        return None if cfg.m2m.self_generator else list(cfg.m2m.generator)

    def setup(self, ctx: RunContext) -> None:
        g = ctx.generators if g_need(self.cfg) != "none" else None
        # per-rank stream under torchrun: each rank translates its own local batch
        self.rng = torch.Generator(device=ctx.device).manual_seed(self.cfg.train.seed + 2 + 1000 * ctx.rank)
        # f's probabilities in the statistics as its loss sees them (LDAM: s * cosine)
        scale = LOSSES.get(self.cfg.loss.name).logit_scale(self.cfg.loss)
        self.translator = M2mTranslator(
            g,
            self.counts,
            self.cfg.m2m,
            ctx.bundle.bounds,
            self.rng,
            amp=ctx.amp,
            channels_last=self.cfg.train.channels_last and ctx.bundle.is_image,
            f_logit_scale=scale,
        )
        self.log = ctx.log

    def sample_weights(self, epoch):
        return inverse_frequency(self.counts) if self.active(epoch) else None

    def on_epoch_start(self, epoch: int, ctx: EpochContext) -> None:
        """At the first epoch this process runs, while translating epochs lie ahead: time one translated
        batch against a plain training step and say what the translation will cost, before any of it is
        spent (a warning when it is far beyond the paper's recipe, e.g. a very large ``m2m.steps``)."""
        first = max(epoch, self.t0)
        left = self.cfg.train.epochs - first
        if self.estimated or left <= 0:
            return
        self.estimated = True
        x, y = self._probe_batch(ctx.train)
        probe = torch.Generator(device=x.device).manual_seed(0)  # a throwaway stream: the run's are untouched
        translate = _timed(lambda: self.translator(ctx.model, x, y, rng=probe), x.device)
        step = _plain_step_seconds(ctx.model, x, y)
        per_epoch, ratio = translate * ctx.n_batches, translate / max(step, 1e-9)
        self.log(
            f"M2m: translating from epoch {first + 1} (T0={self.t0}): one batch's translation takes {translate:.2f}s "
            f"({ratio:.0f}x a plain training step; m2m.steps={self.cfg.m2m.steps}), about {duration(per_epoch)} per "
            f"epoch of {ctx.n_batches} batches and {duration(per_epoch * left)} for the {left} translating "
            "epoch(s), on top of the plain training."
        )
        if ratio > SLOW_TRANSLATION_RATIO:
            msg = (
                f"WARNING: M2m's translation will cost {ratio:.0f}x a plain training step (about "
                f"{duration(per_epoch * left)} in all), far beyond the paper's recipe (m2m.steps=10: about 5-25x). "
                f"Lower m2m.steps={self.cfg.m2m.steps} (and raise m2m.step_size to keep the distance travelled)."
            )
            warnings.warn(msg, RuntimeWarning, stacklevel=2)

    def _probe_batch(self, train):
        """An over-sampled batch drawn from a throwaway stream (the run's random streams are untouched)."""
        probe = torch.Generator().manual_seed(0)
        weights = torch.as_tensor(inverse_frequency(self.counts))[train.y.cpu()]
        idx = torch.multinomial(weights, min(self.cfg.train.batch_size, len(train)), replacement=True, generator=probe)
        return to_float(train.x[idx.to(train.x.device)]), train.y[idx.to(train.y.device)]

    def transform_batch(self, model, x, y, epoch):
        if not self.active(epoch):
            return x, y
        x, y, stats = self.translator(model, x, y)
        self.epoch_acc.add(stats)
        return x, y

    def epoch_stats(self) -> Dict[str, Any]:
        if self.epoch_acc.slots == 0 and self.epoch_acc.accepted_per_class is None:
            return {}
        row = self.epoch_acc.as_row()
        self.epoch_acc = M2mEpochStats(self.num_classes)
        return row

    @classmethod
    def merge_epoch_stats(cls, rows: List[Dict[str, Any]]) -> Dict[str, Any]:
        rows = [r for r in rows if r]
        if len(rows) <= 1:
            return rows[0] if rows else {}
        return merge_stat_rows(rows)

    @classmethod
    def progress_fields(cls, row: Dict[str, Any]) -> Dict[str, str]:
        if row.get("m2m_acceptance") is None:
            return {}
        fields = {"accepted": f"{percent(row['m2m_acceptance'])} of {row['m2m_slots']} slots"}
        if row.get("m2m_g_target_prob") is not None:
            fields["g's target prob"] = percent(row["m2m_g_target_prob"])
        fields["translating"] = f"{row['m2m_seconds']:.1f}s"
        return fields

    def epoch_warnings(self, row: Dict[str, Any]) -> List[str]:
        """M2m that accepts almost nothing is DRS: say so after every such epoch (in full the first time)."""
        acceptance = row.get("m2m_acceptance")
        if acceptance is None or acceptance >= LOW_ACCEPTANCE:
            return []
        slots = row["m2m_slots"]
        short = f"M2m accepted {percent(acceptance)} of {slots} slots this epoch (under {percent(LOW_ACCEPTANCE)})"
        if self.warned:
            return [f"{short}: effectively DRS (see the first warning)."]
        self.warned = True
        return [f"{short}: {LOW_ACCEPTANCE_ADVICE}"]

    def run_summary(self, history: List[Dict[str, Any]]) -> Dict[str, Any]:
        rows = [r for r in history if "m2m_slots" in r]
        slots = sum(r["m2m_slots"] for r in rows)
        accepted = sum(r["m2m_accepted"] for r in rows)
        acceptance = accepted / slots if slots else None
        summary: Dict[str, Any] = {
            "m2m": {
                "slots": slots,
                "accepted": accepted,
                "acceptance": acceptance,
                "translation_seconds": sum(r["m2m_seconds"] for r in rows),
            }
        }
        if acceptance is not None and acceptance < LOW_ACCEPTANCE:
            summary["warnings"] = [
                f"M2m accepted {percent(acceptance)} of {slots} slots over the run (under {percent(LOW_ACCEPTANCE)}): "
                + LOW_ACCEPTANCE_ADVICE
            ]
        return summary

    def state_dict(self) -> Dict[str, Any]:
        return {"rng": self.rng.get_state() if self.rng is not None else None, "estimated": self.estimated}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if state.get("rng") is not None and self.rng is not None:
            self.rng.set_state(state["rng"])
        self.estimated = state.get("estimated", False)
