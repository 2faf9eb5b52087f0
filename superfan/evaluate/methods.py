"""The rows of Tables 1 and 2: which image a FAN localises on and which FAN, the paper's variant names,
and the two interpolation baselines."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from superfan.models.generator import bicubic_upsample
from superfan.stagekinds import STAGE_SPECS

Kind = Literal["bilinear", "bicubic", "sr", "superfan", "hr"]
BASELINES = ("bilinear", "bicubic")  # kinds whose image is an interpolation of the LR, no network


@dataclass
class Method:
    """One row of Table 2: which image a FAN localises on, and which FAN.

    ``kind``: ``bilinear`` / ``bicubic`` (generator None, that upsampling of LR), ``sr`` (a generator + the
    teacher), ``superfan`` (a generator + its own jointly trained FAN), ``hr`` (the HR image itself).
    ``source`` names the image (the Table 1 row): ``bilinear``, ``bicubic``, the checkpoint's label, or
    ``HR``; methods with the same source share one generator pass per batch.
    """

    name: str
    fan: nn.Module
    generator: nn.Module | None = None
    kind: Kind = "sr"
    source: str = ""

    def __post_init__(self) -> None:
        if self.kind in ("sr", "superfan") and self.generator is None:
            raise ValueError(f"method {self.name!r} of kind {self.kind!r} needs a generator")
        if not self.source:
            self.source = {"bilinear": "bilinear", "bicubic": "bicubic", "hr": "HR"}.get(self.kind, self.name)


SUPER_FAN = "Super-FAN"
#: Section 5's word for each loss term (Eq. 5) in the variant names: Ours-pixel-feature-heatmap-GAN.
_TERM_NAMES = {"pixel": "pixel", "perceptual": "feature", "heatmap": "heatmap", "adversarial": "GAN"}


def standard_methods(
    teacher: nn.Module,
    generators: Sequence[tuple[str, nn.Module, nn.Module | None]] = (),
) -> list[Method]:
    """The paper's Table 2 rows: FAN-bilinear, FAN-bicubic, FAN-<label> ..., Super-FAN ..., FAN-HR.

    ``generators`` holds ``(label, generator, own_fan_or_None)``; an own FAN (end-to-end checkpoints only)
    adds a row that localises on the same SR image as ``FAN-<label>`` with that FAN: ``Super-FAN`` (the
    paper's name) when the label is a ``Super-FAN`` variant (``Super-FAN``, ``Super-FAN#2``), else
    ``Super-FAN-<label>``. FAN-bicubic is not in the paper's Table 2; it shows how much of FAN-X's gain over
    FAN-bilinear a better interpolation alone gives.
    """
    rows = [Method("FAN-bilinear", teacher, None, "bilinear"), Method("FAN-bicubic", teacher, None, "bicubic")]
    rows += [Method(f"FAN-{label}", teacher, gen, "sr", source=label) for label, gen, _ in generators]
    rows += [
        Method(label if label.startswith(SUPER_FAN) else f"{SUPER_FAN}-{label}", fan, gen, "superfan", source=label)
        for label, gen, fan in generators
        if fan is not None
    ]
    rows.append(Method("FAN-HR", teacher, None, "hr"))
    return rows


def variant_name(stage_kind: str | None, losses: Any = None) -> str | None:
    """The paper's name (section 5, Tables 1 and 2) of a generator trained by a stage of ``stage_kind``.

    ``pixel`` -> ``Ours-pixel``, ``feature`` -> ``Ours-pixel-feature``, ``heatmap`` ->
    ``Ours-pixel-feature-heatmap``, ``gan`` -> ``Ours-pixel-feature-heatmap-GAN`` (the paper's name for the
    GAN-trained generator whose FAN was *not* trained with it, Table 2's FAN-Ours-pixel-feature-heatmap-GAN),
    ``end2end`` -> ``Super-FAN``. ``None`` for kinds without a generator (``fan``) or unknown ones.

    ``losses`` (a ``LossesConfig`` or its dict, e.g. a checkpoint's ``config["losses"]``) drops the terms
    the run switched off: a ``heatmap`` stage with ``perceptual.weight = 0`` is ``Ours-pixel-heatmap``, not
    the paper's variant, and an ``end2end`` stage short of a term is ``Ours-<terms>-end2end``, not Super-FAN.
    """
    spec = STAGE_SPECS.get(str(stage_kind))
    if spec is None or "generator" not in spec.trains:
        return None
    paper_terms = tuple(t for t in spec.losses if t in _TERM_NAMES)  # eta's landmark term names no variant
    terms = paper_terms
    if losses is not None:
        weights = losses.model_dump() if hasattr(losses, "model_dump") else dict(losses)
        terms = tuple(t for t in terms if float((weights.get(t) or {}).get("weight", 1.0)) > 0)
        if not terms:
            return None
    name = "Ours-" + "-".join(_TERM_NAMES.get(t, t) for t in terms)
    if "fan" in spec.trains:  # end-to-end: the FAN is trained with the generator
        return SUPER_FAN if terms == paper_terms else f"{name}-end2end"
    return name


def upsample_bilinear(lr: torch.Tensor, size: int = 64) -> torch.Tensor:
    """The baseline of both tables: bilinear (half-pixel centres, no antialiasing) upsampling of LR."""
    return F.interpolate(lr, size=(size, size), mode="bilinear", align_corners=False)


def upsample_bicubic(lr: torch.Tensor, size: int = 64) -> torch.Tensor:
    """The standard SR baseline: bicubic upsampling with MATLAB ``imresize``'s kernel, clamped to [0, 1].

    ``antialias=True`` selects torch's Keys a = -0.5 kernel (PIL's ``BICUBIC``, MATLAB's ``imresize``), the
    kernel the LR was made with (``degrade.downsample``); for upsampling it does not widen the kernel.
    Clamped because bicubic overshoots at edges, as ``degrade.downsample`` clamps.
    """
    return bicubic_upsample(lr, size).clamp(0.0, 1.0)
