"""What each stage kind trains and which Eq. 5 terms it optimises: the one table that training, evaluation
(the paper's variant names) and the sweeps read. Plain data, no torch, so any layer may import it.

========  =============================  ===================================================
kind      trains                         losses (Eq. 5 terms)
========  =============================  ===================================================
fan       FAN                            heatmap vs ground-truth heatmaps, every stack
pixel     generator                      pixel
feature   generator                      pixel + perceptual
heatmap   generator                      pixel + perceptual + heatmap (FAN frozen)
gan       generator, critic (1:1)        pixel + perceptual + heatmap + WGAN (FAN frozen)
end2end   generator, critic, FAN         all four, + landmark: the FAN learns from the heatmap term
                                         and, on faces with landmarks, from their ground truth
========  =============================  ===================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from superfan.errors import ConfigError

if TYPE_CHECKING:
    from superfan.config import Config


@dataclass(frozen=True)
class StageSpec:
    trains: tuple[str, ...]
    losses: tuple[str, ...]

    @property
    def needs_teacher(self) -> bool:
        return "heatmap" in self.losses

    @property
    def needs_perceptual(self) -> bool:
        return "perceptual" in self.losses


STAGE_SPECS: dict[str, StageSpec] = {
    "fan": StageSpec(("fan",), ("heatmap_gt",)),
    "pixel": StageSpec(("generator",), ("pixel",)),
    "feature": StageSpec(("generator",), ("pixel", "perceptual")),
    "heatmap": StageSpec(("generator",), ("pixel", "perceptual", "heatmap")),
    "gan": StageSpec(("generator", "critic"), ("pixel", "perceptual", "heatmap", "adversarial")),
    "end2end": StageSpec(("generator", "critic", "fan"), ("pixel", "perceptual", "heatmap", "adversarial", "landmark")),
}

#: The one wording of "this run needs the HR teacher FAN" (CLI, driver, loop and stage runner).
NEEDS_TEACHER = (
    "Super-FAN stages need the teacher FAN: pass --teacher CHECKPOINT (from `superfan train fan`) or set train.teacher"
)


def default_stages(cfg: Config) -> list[str]:
    """Super-FAN runs use every non-``fan`` stage; the ``fan`` (teacher) stages belong to ``train fan``."""
    return [s.name for s in cfg.stages if s.kind != "fan"]


def needs_teacher(cfg: Config, stages: list[str]) -> bool:
    """Whether any of ``stages`` trains against the teacher FAN (every Super-FAN kind does)."""
    return any(cfg.stage(n).kind != "fan" for n in stages)


def require_teacher(cfg: Config, stages: list[str], teacher: str | None) -> None:
    """The missing-teacher check, one line, wherever a run is set up."""
    if needs_teacher(cfg, stages) and not teacher:
        raise ConfigError(NEEDS_TEACHER)
