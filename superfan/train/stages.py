"""One stage of a run: its networks, optimisers, LR schedule, training step and checkpoint payload.

The loop (Ray workers), the unit tests and ``superfan bench train`` all call :class:`StageRunner.step`,
so the numbers the benchmark prints are the numbers the loop runs.

What each kind trains and optimises is :data:`superfan.stagekinds.STAGE_SPECS` (section 4.5).

The heatmap target is always the frozen teacher FAN run on the HR image (Eq. 4); the integrated FAN
starts as a copy of the teacher and only moves in ``end2end``. Its gradient there is the gradient of
``gamma * l_heatmap + eta * l_landmark``: the teacher's heatmaps and, where a face has them, the ground-truth
heatmaps, both on the SR image (``losses.landmark``; eta 0 = the teacher alone). RMSprop normalises by the
running gradient scale, so gamma and eta set the FAN's balance between its two targets and their share of
the generator's loss, but not the FAN's effective step size.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from superfan.config import Config, StageConfig
from superfan.errors import ConfigError, TrainingDiverged
from superfan.faults import poison_at_step
from superfan.stagekinds import NEEDS_TEACHER, STAGE_SPECS


def lr_at(stage: StageConfig, step: int, total_steps: int) -> float:
    """Learning rate for optimiser step ``step`` (0-based) of a stage of ``total_steps`` steps.

    Section 4.5 only says "gradually decreased from 2.5e-4 to 1e-5"; the per-step curve is
    ``stage.lr_decay``. Steps past the planned total keep ``lr_end``. The first ``stage.warmup_steps``
    steps ramp linearly up to the curve (none in the paper).
    """
    warm = min(1.0, (max(step, 0) + 1) / stage.warmup_steps) if stage.warmup_steps else 1.0
    return warm * _decayed(stage, step, total_steps)


def _decayed(stage: StageConfig, step: int, total_steps: int) -> float:
    if stage.lr_decay == "constant":
        return stage.lr_start
    t = min(max(step, 0) / max(total_steps - 1, 1), 1.0)
    a, b = stage.lr_start, stage.lr_end
    if stage.lr_decay == "exponential":
        return a * (b / a) ** t
    if stage.lr_decay == "linear":
        return a + (b - a) * t
    return b + 0.5 * (a - b) * (1.0 + math.cos(math.pi * t))  # cosine


@dataclass
class Nets:
    """The bare (never DDP-wrapped) networks of a run; stages wrap what they train."""

    generator: nn.Module | None = None
    critic: nn.Module | None = None
    fan: nn.Module | None = None
    teacher: nn.Module | None = None
    perceptual: nn.Module | None = None

    def get(self, name: str) -> nn.Module:
        net = getattr(self, name)
        if net is None:
            raise ConfigError(f"this stage needs a {name} network, but none was built")
        return net


def build_nets(cfg: Config, kinds: list[str], device: torch.device, teacher: nn.Module | None = None) -> Nets:
    """Networks needed by the given stage kinds; the integrated FAN is a copy of ``teacher``."""
    import copy

    from superfan.models import FAN, Critic, Generator, PerceptualNet

    nets = Nets(teacher=teacher)
    specs = [STAGE_SPECS[k] for k in kinds]
    if any(k != "fan" for k in kinds):
        nets.generator = Generator.from_config(cfg.model.generator)
        nets.critic = Critic(channels=cfg.model.critic.channels)
    if any(s.needs_perceptual for s in specs):
        nets.perceptual = PerceptualNet(weights=cfg.model.perceptual_weights, layers=cfg.losses.perceptual.layers)
    if "fan" in kinds:
        nets.fan = FAN.from_config(cfg.model.fan)
    elif teacher is not None:
        nets.fan = copy.deepcopy(teacher)
    for name in ("generator", "critic", "fan", "teacher", "perceptual"):
        net = getattr(nets, name)
        if net is not None:
            setattr(nets, name, net.to(device))
    for frozen in (nets.teacher, nets.perceptual):
        if frozen is not None:
            frozen.eval().requires_grad_(False)
    return nets


@dataclass
class StageRunner:
    """Optimisers, LR schedule and the step function of one stage over a set of :class:`Nets`.

    ``wrap`` turns a bare module into its data-parallel form (``ray.train.torch.prepare_model`` in the
    loop, identity in tests and the benchmark). Only the networks the stage trains are wrapped, because
    DDP refuses modules without trainable parameters (the frozen FAN before ``end2end``).
    """

    stage: StageConfig
    cfg: Config
    nets: Nets
    total_steps: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    wrap: Callable[[nn.Module], nn.Module] = lambda m: m
    step_in_stage: int = 0
    debug: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.spec = STAGE_SPECS[self.stage.kind]
        if self.spec.needs_teacher and self.nets.teacher is None:
            raise ConfigError(f"stage {self.stage.name!r} ({self.stage.kind}): {NEEDS_TEACHER}")
        for name in ("generator", "critic", "fan"):
            net = getattr(self.nets, name)
            if net is None:
                continue
            trains = name in self.spec.trains
            net.requires_grad_(trains)
            net.train(trains)
        self.models: dict[str, nn.Module] = {n: self.wrap(self.nets.get(n)) for n in self.spec.trains}
        opt = self.cfg.optimizer
        self.optimizers: dict[str, torch.optim.Optimizer] = {
            n: torch.optim.RMSprop(
                self.nets.get(n).parameters(),
                lr=self.stage.lr_start,
                alpha=opt.alpha,
                eps=opt.eps,
                momentum=opt.momentum,
                weight_decay=opt.weight_decay,
            )
            for n in self.spec.trains
        }
        self.amp = self.device.type == "cuda" and self.cfg.train.bf16
        self.channels_last = self.device.type == "cuda" and self.cfg.train.channels_last
        if self.channels_last:
            for n in ("generator", "critic", "fan", "teacher", "perceptual"):
                net = getattr(self.nets, n)
                if net is not None:
                    net.to(memory_format=torch.channels_last)
        if self.device.type == "cuda" and self.cfg.train.compile:
            compile_nets(self.nets)

    # -------------------------------------------------------------------------------- schedule, state

    def lr(self) -> float:
        return lr_at(self.stage, self.step_in_stage, self.total_steps)

    def _set_lr(self) -> None:
        lr = self.lr()
        for name, opt in self.optimizers.items():
            group_lr = lr
            if name == "critic" and self.cfg.optimizer.critic_lr is not None:
                group_lr = self.cfg.optimizer.critic_lr * lr / self.stage.lr_start
            for group in opt.param_groups:
                group["lr"] = group_lr

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
            "schedulers": {
                n: {"step": self.step_in_stage, "total_steps": self.total_steps, "lr": self.lr()}
                for n in self.optimizers
            },
        }

    def adopt_optimizer_states(self, states: dict[str, Any]) -> list[str]:
        """Continue the RMSprop statistics of the networks a previous stage (or the teacher run) trained;
        returns the names adopted. Learning rates still come from this stage's schedule."""
        done = []
        for name, opt in self.optimizers.items():
            if states.get(name):
                opt.load_state_dict(states[name])
                done.append(name)
        return done

    def checkpoint(self, counters: dict[str, int], metrics: dict[str, Any], lineage: dict[str, Any]) -> dict[str, Any]:
        """The payload of a checkpoint written after an epoch of this stage: where the run stands
        (``counters``: stage_index, epoch, global_epoch, step), every network's weights, this stage's optimiser
        and schedule state (:meth:`resume` reads them back), the config, the epoch's report and ``lineage``
        (the teacher and perceptual weights it was trained against)."""
        weights = {n: _cpu_state(getattr(self.nets, n)) for n in ("generator", "fan", "critic")}
        return {"stage": self.stage.name, "stage_kind": self.stage.kind, **counters, **weights, **self.state_dict(),
                "config": self.cfg.to_dict(), "metrics": metrics, **lineage}  # fmt: skip

    def resume(self, payload: dict[str, Any]) -> None:
        """Continue mid-stage from a checkpoint this stage wrote (its optimisers and step in the schedule)."""
        self.load_state_dict(payload)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for n, o in self.optimizers.items():
            if n in state.get("optimizers", {}):
                o.load_state_dict(state["optimizers"][n])
        sched = next(iter(state.get("schedulers", {}).values()), None)
        if sched is not None:
            self.step_in_stage = int(sched["step"])

    # ------------------------------------------------------------------------------------------ step

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _check(self, terms: dict[str, torch.Tensor], what: str, params: Iterable[nn.Parameter]) -> None:
        """Stop on a non-finite step, decided by the gradients *after* backward.

        Under DDP the gradients are all-reduced in backward, so every rank sees the same ones and takes the
        same decision without another collective; a local check of the loss alone would stop one rank
        while the others wait in the next all-reduce. Called between ``backward`` and ``step``, so the
        weights never take a non-finite update.
        """
        grads = [p.grad for p in params if p.grad is not None]
        finite = bool(torch.isfinite(torch.nn.utils.get_total_norm(grads))) if grads else True
        if finite and all(bool(torch.isfinite(v.detach()).all()) for v in terms.values()):
            return
        desc = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
        raise TrainingDiverged(
            f"stage {self.stage.name!r} step {self.step_in_stage}: {what} loss or gradients not finite ({desc}); "
            "stopped before writing a checkpoint, the last good one is untouched"
        )

    def _poison(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * float("nan") if poison_at_step(self.debug, self.step_in_stage) else loss

    def step(self, batch: dict[str, Any]) -> dict[str, float]:
        """One optimisation step (critic steps first in GAN stages); returns detached loss values."""
        self._set_lr()
        out = self._fan_step(batch) if self.stage.kind == "fan" else self._sr_step(batch)
        self.step_in_stage += 1
        return out

    def _fan_step(self, batch: dict[str, Any]) -> dict[str, float]:
        from superfan.losses import heatmap_loss

        fan = self.models["fan"]
        hr = self._input(batch["hr"])
        target = batch["heatmaps"].to(self.device)
        mask = batch["has_landmarks"].to(self.device).bool()
        with self._autocast():
            # Faces without landmarks are masked out; with none in the batch the loss is a connected zero,
            # which keeps every DDP rank's graph alive (and a zero gradient leaves RMSprop's weights).
            loss = heatmap_loss([p.float() for p in fan(hr)], target, self.cfg.losses.heatmap.type, mask=mask)
        loss = self._poison(loss)
        opt = self.optimizers["fan"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        self._check({"heatmap_gt": loss}, "FAN", self.nets.get("fan").parameters())
        opt.step()
        return {"heatmap_gt": float(loss.detach()), "total": float(loss.detach())}

    def _critic_step(self, hr: torch.Tensor, lr_img: torch.Tensor) -> dict[str, float]:
        from superfan.losses import critic_loss

        critic = self.models["critic"]
        opt = self.optimizers["critic"]
        with torch.no_grad(), self._autocast():
            fake = self.nets.get("generator")(lr_img)
        fake = fake.float().detach()
        loss, stats = critic_loss(critic, hr.float(), fake, self.cfg.losses.adversarial.gp_lambda)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        self._check({"critic": loss}, "critic", self.nets.get("critic").parameters())
        opt.step()
        out = {"critic": float(loss.detach())}
        for k, v in (stats or {}).items():
            out[f"critic_{k}"] = float(v.detach()) if isinstance(v, torch.Tensor) else float(v)
        return out

    def _sr_step(self, batch: dict[str, Any]) -> dict[str, float]:
        from superfan import losses as L

        hr = self._input(batch["hr"])
        lr_img = self._input(batch["lr"])
        out: dict[str, float] = {}
        if "adversarial" in self.spec.losses:
            # Section 4.5: generator and critic are run 1:1; extra critic steps reuse this batch.
            self.nets.get("critic").requires_grad_(True)
            for _ in range(self.stage.critic_steps):
                out.update(self._critic_step(hr, lr_img))
            # The generator's adversarial term goes through the bare critic with frozen weights: no DDP
            # hooks fire and the critic's gradients stay those of its own step.
            self.nets.get("critic").requires_grad_(False)
        gen = self.models["generator"]
        terms: dict[str, torch.Tensor] = {}
        with self._autocast():
            sr = gen(lr_img)
            terms["pixel"] = L.pixel_loss(sr.float(), hr.float(), self.cfg.losses.pixel.type)
            # What the loss networks see: the same image, with their gradient into it smoothed (config).
            seen = L.smooth_gradient(sr) if self.cfg.losses.smooth_network_gradients else sr
            if "perceptual" in self.spec.losses:
                terms["perceptual"] = L.perceptual_loss(self.nets.get("perceptual"), seen, hr)
            if "heatmap" in self.spec.losses:
                with torch.no_grad():
                    target = self.nets.get("teacher")(hr)[-1].float()
                fan = self.models["fan"] if "fan" in self.models else self.nets.get("fan")
                preds = [p.float() for p in fan(seen)]
                terms["heatmap"] = L.heatmap_loss(preds, target, self.cfg.losses.heatmap.type)
                if "landmark" in self.spec.losses and self.cfg.losses.landmark.weight > 0:
                    # The joint FAN against the ground truth where a face has it (a connected zero where
                    # none in the batch does, so every rank runs the same graph).
                    mask = batch["has_landmarks"].to(self.device).bool()
                    gt = batch["heatmaps"].to(self.device)
                    terms["landmark"] = L.heatmap_loss(preds, gt, self.cfg.losses.landmark.type, mask=mask)
            if "adversarial" in self.spec.losses:
                terms["adversarial"] = L.generator_adversarial_loss(self.nets.get("critic"), seen.float())
        terms = {k: v.float() for k, v in terms.items()}
        total = self._poison(L.weighted_total(terms, self.cfg.losses))
        trained = [n for n in self.spec.trains if n != "critic"]
        for n in trained:
            self.optimizers[n].zero_grad(set_to_none=True)
        total.backward()
        self._check({**terms, "total": total}, "generator", (p for n in trained for p in self.nets.get(n).parameters()))
        for n in self.spec.trains:
            if n != "critic":
                self.optimizers[n].step()
        if "critic" in self.spec.trains:
            self.nets.get("critic").requires_grad_(True)
        out.update({k: float(v.detach()) for k, v in terms.items()})
        out["total"] = float(total.detach())
        return out


def compile_nets(nets: Nets) -> list[str]:
    """``Module.compile()`` (in place: parameter names and checkpoints unchanged) on every network but the
    critic, whose gradient penalty needs double backward; once per network, as the chain shares them.
    Returns the names compiled now."""
    done = []
    for name in ("generator", "fan", "teacher", "perceptual"):
        net = getattr(nets, name)
        if net is not None and not getattr(net, "_superfan_compiled", False):
            net.compile()
            net._superfan_compiled = True  # type: ignore[assignment]
            done.append(name)
    return done


def _cpu_state(net: nn.Module | None) -> dict[str, torch.Tensor] | None:
    return None if net is None else {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}


def params_finite(nets: Nets) -> bool:
    """True when no trainable network holds a NaN/inf weight (checked before every checkpoint)."""
    for net in (nets.generator, nets.critic, nets.fan):
        if net is not None:
            for p in net.parameters():
                if not torch.isfinite(p).all():
                    return False
    return True
