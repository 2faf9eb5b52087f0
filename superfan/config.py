"""One typed, validated configuration object with the paper's values as defaults.

Every number the paper states (layouts, the 50 px face in a 64x64 window, RMSprop with 2.5e-4 -> 1e-5,
60/5/5 epochs, the augmentation ranges of section 4.5, lambda = 10 for the gradient penalty, AUC at
NME 0.1, the pose bins of section 3) is a default here. Where the paper is silent the default is our
choice and the field's description says so; the sweeps exist to search those.

Configs load from YAML (a packaged profile by name, e.g. ``tiny``, or a path) and accept dotted
overrides (``losses.heatmap.weight=0.05``). A bad value fails with one line naming the field.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from superfan.errors import ConfigError

NonNegInt = Annotated[int, Field(ge=0)]
PosInt = Annotated[int, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0.0)]
PosFloat = Annotated[float, Field(gt=0.0)]
Prob = Annotated[float, Field(ge=0.0, le=1.0)]


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):  # YAML's `yes` or a JSON true would otherwise count as 1
        raise ValueError("expected a number, not a boolean")
    return value


#: Upper bounds on what a user controls that sizes work or memory, checked when the config is read, before
#: any allocation or Ray start (docs/reliability.md lists them).
MAX_BATCH_SIZE = 4096
MAX_EPOCHS = 100_000
MAX_LR = 10.0
MAX_HOURGLASS_DEPTH = 6  #: a 64x64 heatmap halved 6 times is one pixel
BatchSize = Annotated[int, BeforeValidator(_not_bool), Field(gt=0, le=MAX_BATCH_SIZE)]
Epochs = Annotated[int, BeforeValidator(_not_bool), Field(gt=0, le=MAX_EPOCHS)]
LearningRate = Annotated[float, BeforeValidator(_not_bool), Field(gt=0.0, le=MAX_LR)]


class _Strict(BaseModel):
    # allow_inf_nan=False: an infinite or NaN value is never a setting (``optimizer.eps=.inf`` or
    # ``train.cpus_per_worker=.inf`` would validate and then fail far from the config, or not at all).
    model_config = ConfigDict(extra="forbid", frozen=False, validate_assignment=True, allow_inf_nan=False)


# ----------------------------------------------------------------------------------------------- model


class GeneratorConfig(_Strict):
    """Section 4.1: N1-N2-N3 residual blocks at 16, 32 and 64 px; 12-3-2 is the paper's network."""

    layout: tuple[NonNegInt, NonNegInt, NonNegInt] = (12, 3, 2)
    channels: PosInt = 64
    long_skip: bool = Field(False, description="A1.3: the paper found no gain from long skips; off.")
    upsample: Literal["subpixel", "resize"] = Field(
        "subpixel",
        description=(
            "The paper is silent; 'subpixel' is SRResNet's [20] PixelShuffle block. 'resize' is bilinear x2 "
            "then conv3x3 (Odena et al. 2016), with no per-sub-pixel weights to learn a grid."
        ),
    )
    residual: Literal["none", "bicubic"] = Field(
        "none",
        description=(
            "Not in the paper (Fig. 3a has none): 'bicubic' adds the bicubic upsampling of the input to the "
            "output, so the network learns only the residual (VDSR's global residual learning, Kim et al. "
            "2016). The tiny profile uses it: on 2 CPU cores it is what lets ~700 steps pass bicubic."
        ),
    )


class CriticConfig(_Strict):
    """Section 4.2: DCGAN discriminator without batch norm (WGAN-GP critic)."""

    channels: PosInt = Field(64, description="Width of the first conv; doubles per stride-2 layer (DCGAN).")


class FANConfig(_Strict):
    """Section 4.3: FAN of [4] with 2 hourglasses and the bottleneck block of [3]."""

    stacks: PosInt = 2
    features: PosInt = Field(256, description="FAN's width, as in [4].")
    landmarks: Literal[68] = 68
    hourglass_depth: PosInt = Field(4, le=MAX_HOURGLASS_DEPTH, description="Four down/up levels, as in [4] and [22].")
    heatmap_size: Literal[16, 32, 64] = Field(
        32,
        description=(
            "Our choice: [4] predicts at 1/4 of a 256 px input; a 64 px input at 1/4 gives 16x16 maps, too "
            "coarse for a 50 px face, so the stem downsamples by 2 and heatmaps are 32x32."
        ),
    )
    sigma: PosFloat = Field(
        1.0,
        description="Gaussian std in heatmap pixels; [4] uses 2 on 64x64 maps of ~200 px faces, scaled here.",
    )


#: ``model.perceptual_weights`` value that asks for random ResNet-50 features on purpose (no warning).
RANDOM_PERCEPTUAL_WEIGHTS = "random"
#: The URL schemes ``model.perceptual_weights`` may use (besides a plain local path), and how each is read:
#: never through webdataset's ``gopen`` (whose ``pipe:`` runs a shell command) or any other program.
PERCEPTUAL_SCHEMES = {
    "file": "a local file",
    "s3": "superfan.storage (plain bytes)",
    "http": "torch.hub (urllib, no program run)",
    "https": "torch.hub (urllib, no program run)",
}


def check_perceptual_source(value: str) -> str:
    """``value`` if it is a ``model.perceptual_weights`` source the loader reads as plain bytes (a local path,
    ``file://``, ``s3://bucket/key``, ``http(s)://``, or ``random``), else a one-line ``ValueError``:
    ``pipe:cmd`` and every other scheme are refused when the config is read, before anything runs. A local
    file whose name looks like a scheme (``pipe:x``) is reachable as ``./pipe:x``."""
    from urllib.parse import urlsplit

    if not value.strip():
        raise ValueError("expected a local path or URL of a ResNet-50 state dict, or 'random'")
    if value == RANDOM_PERCEPTUAL_WEIGHTS:
        return value
    try:
        parts = urlsplit(value)
    except ValueError as err:
        raise ValueError(f"not a valid path or URL ({err})") from None
    scheme = parts.scheme.lower()
    allowed = "a local path, file://, s3://, http:// or https://"
    if scheme == "pipe":
        raise ValueError(f"a pipe: URL would run a command and is never opened; use {allowed}")
    if scheme and scheme not in PERCEPTUAL_SCHEMES:
        raise ValueError(f"unsupported scheme '{scheme}:' (use {allowed}; a local file named so: ./{value})")
    if scheme in {"s3", "http", "https"} and not (parts.netloc and parts.path.strip("/")):
        raise ValueError(f"a {scheme}:// URL needs a host or bucket and a path")
    return value


class ModelConfig(_Strict):
    generator: GeneratorConfig = GeneratorConfig()
    critic: CriticConfig = CriticConfig()
    fan: FANConfig = FANConfig()
    perceptual_weights: str | None = Field(
        None,
        description="Local path or URL of a torchvision ResNet-50 state dict (ImageNet), e.g. torchvision's "
        "https://download.pytorch.org/models/resnet50-0676ba61.pth. 'random' = random features, chosen "
        "knowingly. None = random features too, warned loudly; the paper profile refuses None (see "
        "load_config). Random features make Eq. 2 a random-projection loss, not the paper's; both are "
        "recorded in checkpoints and reports. Only a local path, file://, s3:// or http(s):// is read "
        "(check_perceptual_source); pipe: and other schemes are refused when the config is read.",
    )

    @field_validator("perceptual_weights")
    @classmethod
    def _perceptual_source(cls, value: str | None) -> str | None:
        return None if value is None else check_perceptual_source(value)


# ---------------------------------------------------------------------------------------------- losses


class PixelLossConfig(_Strict):
    """Eq. 1 (alpha). A1.1: L1 gave no gain over L2."""

    type: Literal["l2", "l1"] = "l2"
    weight: NonNegFloat = Field(1.0, description="alpha; the paper does not publish it (our choice: 1).")


class PerceptualLossConfig(_Strict):
    """Eq. 2 (beta), summed over ResNet-50 blocks B1, B2, B3."""

    weight: NonNegFloat = Field(
        0.01, description="beta; unpublished. Our choice puts it near the pixel term at convergence."
    )
    layers: tuple[Literal["layer1", "layer2", "layer3"], ...] = ("layer1", "layer2", "layer3")


class HeatmapLossConfig(_Strict):
    """Eq. 4 (gamma). A1.2: L1 helped slightly for large poses; L2 is the paper's default."""

    type: Literal["l2", "l1"] = "l2"
    weight: NonNegFloat = Field(0.01, description="gamma; unpublished (our choice).")


class AdversarialLossConfig(_Strict):
    """Eq. 3 (zeta): WGAN-GP, lambda = 10 as in [10]."""

    weight: NonNegFloat = Field(1e-3, description="zeta; unpublished. 1e-3 as SRGAN [20] weighs its GAN term.")
    gp_lambda: NonNegFloat = 10.0


class LandmarkLossConfig(_Strict):
    """Not in the paper (eta): in ``end2end`` the integrated FAN is also fitted to the ground-truth heatmaps of
    the faces that have landmarks, on the super-resolved image, with Eq. 4's loss. The paper trains its FAN
    "jointly" but says nothing of what supervises it; with the heatmap term alone it can only learn to copy
    the frozen teacher on the HR face, and so inherits the teacher's errors. 0 = off (the heatmap term alone)."""

    type: Literal["l2", "l1"] = "l2"
    weight: NonNegFloat = Field(
        0.01,
        description="eta; our choice: gamma's default, so the FAN learns from the teacher and from the ground "
        "truth alike (faces without landmarks contribute nothing to this term).",
    )


class LossesConfig(_Strict):
    pixel: PixelLossConfig = PixelLossConfig()
    perceptual: PerceptualLossConfig = PerceptualLossConfig()
    heatmap: HeatmapLossConfig = HeatmapLossConfig()
    adversarial: AdversarialLossConfig = AdversarialLossConfig()
    landmark: LandmarkLossConfig = LandmarkLossConfig()
    smooth_network_gradients: bool = Field(
        True,
        description=(
            "Our choice (the paper is silent): the gradient that the loss networks (ResNet-50, FAN, critic) "
            "send back into the SR image is low-passed (5-tap binomial), the losses' values are not. Their "
            "stride-2 layers return gradients with a period-2/4 grid, which the generator otherwise learns "
            "as a visible texture (losses.smooth_gradient)."
        ),
    )


# ------------------------------------------------------------------------------------------- optimizer


class OptimizerConfig(_Strict):
    """RMSprop [28]; the paper gives only the learning rates, the rest are torch's defaults."""

    name: Literal["rmsprop"] = "rmsprop"
    alpha: Prob = Field(0.99, description="RMSprop smoothing constant (torch default).")
    eps: PosFloat = 1e-8
    momentum: NonNegFloat = 0.0
    weight_decay: NonNegFloat = 0.0
    critic_lr: LearningRate | None = Field(None, description="Critic learning rate; None = the stage's.")
    carry_state: bool = Field(
        True,
        description="Our choice (the paper is silent): each network's RMSprop statistics carry into the next "
        "stage (and the teacher's into end2end's FAN). A fresh RMSprop starts square_avg at 0, so its first "
        "~100 updates are up to 10x the learning rate: enough to undo a pretrained network.",
    )


StageKind = Literal["fan", "pixel", "feature", "heatmap", "gan", "end2end"]


def is_checkpoint_ref(ref: str) -> bool:
    """``init_from`` (and ``--init``) name a checkpoint when they look like a path or URL, else an earlier
    stage of the config: the one rule the config, the trainer and the loop all apply."""
    return "/" in ref or "://" in ref or ref.endswith(".pt")


class StageConfig(_Strict):
    """One training stage of section 4.5.

    ``kind`` says which losses and networks are active: ``pixel`` (Eq. 1), ``feature`` (+ Eq. 2),
    ``heatmap`` (+ Eq. 4 against the frozen teacher), ``gan`` (+ Eq. 3, generator:critic 1:1),
    ``end2end`` (all, FAN trained jointly). ``fan`` trains the HR teacher FAN on ground-truth heatmaps.
    """

    name: str
    kind: StageKind
    epochs: Epochs
    lr_start: LearningRate = 2.5e-4
    lr_end: LearningRate = 1e-5
    lr_decay: Literal["exponential", "cosine", "linear", "constant"] = Field(
        "exponential",
        description="'gradually decreased from 2.5e-4 to 1e-5' (4.5): our choice is geometric per step.",
    )
    init_from: str | None = Field(
        None, description="Name of an earlier stage in this config, or a checkpoint path/URL, to start from."
    )
    critic_steps: PosInt = Field(1, description="Critic steps per generator step; the paper keeps 1:1.")
    warmup_steps: NonNegInt = Field(
        0,
        description=(
            "Linear learning-rate ramp over the first steps; 0 (the paper has none). A fresh RMSprop divides "
            "the first gradients by their own size, so a high starting rate makes ~10x-lr steps at first."
        ),
    )

    @model_validator(mode="after")
    def _lr_order(self) -> StageConfig:
        if self.lr_decay != "constant" and self.lr_end > self.lr_start:
            raise ValueError(f"lr_end ({self.lr_end}) must not exceed lr_start ({self.lr_start})")
        return self


def paper_stages() -> list[StageConfig]:
    """Section 4.5: 60 epochs with pixel+feature+heatmap, 5 with WGAN-GP, 5 end-to-end at 2.5e-4."""
    return [
        StageConfig(name="heatmap", kind="heatmap", epochs=60),
        StageConfig(name="gan", kind="gan", epochs=5, init_from="heatmap"),
        StageConfig(name="end2end", kind="end2end", epochs=5, init_from="gan", lr_decay="constant"),
    ]


# ------------------------------------------------------------------------------------------------ data


class DataConfig(_Strict):
    train: list[str] = Field(default_factory=list, description="Shard URLs, brace patterns or manifest URLs.")
    val: list[str] = Field(default_factory=list)
    batch_size: BatchSize = Field(
        16,
        description="Per worker. The paper does not publish it (our choice). Changing it: scale every stage's "
        "lr_start/lr_end by sqrt(batch_size / 16) with a linear warmup (warmup_steps ~ 1 epoch), the square-root "
        "rule for adaptive optimisers like RMSprop/Adam (Malladi et al. 2022), not Goyal et al.'s linear rule, "
        "which is SGD's; the 16 default is unmeasured at larger batches (docs/development.md, 'GPU cost').",
    )
    num_workers: NonNegInt = Field(2, description="DataLoader worker processes per training worker.")
    shuffle_buffer: NonNegInt = 1000
    samples_per_epoch: PosInt | None = Field(
        None, description="Samples per epoch per training worker; None = one pass over the train set."
    )
    val_samples: PosInt | None = Field(
        None, description="Cap on validation faces, equal counts per yaw bin where the bins have them; None = all."
    )
    max_bad_fraction: Prob = Field(
        0.01,
        description="Undecodable samples are skipped and counted (skipped_samples); above this fraction of "
        "what was read the run stops: the data is bad, not a sample.",
    )
    verify: Literal["error", "skip", "off"] = Field(
        "error",
        description="Check every shard against the sha256 and size its manifest lists as it is read: 'error' "
        "stops the run with one line naming a shard that changed after packing, 'skip' leaves such a shard out "
        "(a warning), 'off' streams without checking (shards over 1 GiB, which are read whole to be checked).",
    )
    augment_on: Literal["loader", "device"] = Field(
        "loader",
        description="Where training batches are decoded, warped, jittered, degraded and given heatmaps: "
        "'loader' = DataLoader workers on the CPU, per face (the default; wins on CPU-only runs, where the "
        "device path would take the training process's own cores, and where CPU cores per GPU are plenty); "
        "'device' = batched in torch on the training device from the JPEG bytes and draws the CPU hands over "
        "(superfan.data.device_augment; wins on a fast GPU fed by few CPU cores). Same draws, same "
        "distribution; validation always uses the loader path.",
    )
    seed: int = 0


class AugmentConfig(_Strict):
    """Section 4.5 ranges; ``strength`` scales them all (0 = none, 1 = the paper's)."""

    strength: Annotated[float, Field(ge=0.0, le=2.0)] = 1.0
    flip_prob: Prob = 0.5
    scale: tuple[PosFloat, PosFloat] = (0.85, 1.15)
    rotation_deg: Annotated[float, Field(ge=0.0, le=45.0)] = 30.0
    brightness: Annotated[float, Field(ge=0.0, le=1.0)] = Field(0.2, description="Unpublished (our choice).")
    contrast: Annotated[float, Field(ge=0.0, le=1.0)] = Field(0.2, description="Unpublished (our choice).")
    color: Annotated[float, Field(ge=0.0, le=1.0)] = Field(0.2, description="Saturation jitter (our choice).")
    face_height: PosInt = Field(50, description="Section 4.5: faces are cropped 50 px tall.")
    hr_size: Literal[64] = 64

    @field_validator("scale")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] > v[1]:
            raise ValueError(f"scale range must be (low, high), got {v}")
        return v


class DegradeConfig(_Strict):
    """x4 downsampling, and the real-world mode of section 5.3 (blur 3-7 px, JPEG, colour distortion)."""

    kernel: Literal["bicubic", "bilinear", "area"] = Field(
        "bicubic", description="Antialiased bicubic, as in [20] and MATLAB imresize (our choice)."
    )
    real_world: bool = False
    blur_on: Literal["lr", "hr"] = Field(
        "lr",
        description="Where the real-world blur applies: 'lr' = the 16x16 input after downsampling, as section 5.3 "
        "blurs 'the input images'; 'hr' = the 64x64 face before downsampling (a defocused camera seen at low "
        "resolution; the same kernel is then 4x narrower on the input).",
    )
    blur_prob: Prob = 0.5
    blur_kernel: tuple[PosInt, PosInt] = (3, 7)
    blur_sigma: tuple[PosFloat, PosFloat] = (0.5, 1.5)
    jpeg_prob: Prob = 0.5
    jpeg_quality: tuple[Annotated[int, Field(ge=1, le=100)], Annotated[int, Field(ge=1, le=100)]] = (30, 90)
    color_prob: Prob = 0.3
    color_shift: Annotated[float, Field(ge=0.0, le=0.5)] = 0.1
    noise_prob: Prob = Field(0.0, description="Gaussian noise; not in the paper, off by default.")
    noise_std: NonNegFloat = 0.02

    @field_validator("blur_kernel")
    @classmethod
    def _odd_kernel(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] > v[1] or v[0] % 2 == 0 or v[1] % 2 == 0:
            raise ValueError(f"blur_kernel must be odd sizes (low, high), got {v}")
        return v


# ----------------------------------------------------------------------------------- training runtime


class TrainConfig(_Strict):
    workers: PosInt = Field(1, description="Ray Train workers (DDP ranks) per run.")
    use_gpu: bool | None = Field(
        None,
        description="Ask Ray for GPUs. None = only when the cluster has GPUs when the run starts, which an "
        "autoscaled cluster (0 GPU nodes until asked) never has: GPU profiles set true.",
    )
    gpus_per_worker: Annotated[float, Field(gt=0.0, le=8.0)] = Field(
        1.0,
        description="GPUs per Train worker; a fraction (0.25) packs several small trials onto one GPU.",
    )
    backend: Literal["auto", "nccl", "gloo"] = Field(
        "auto",
        description="torch.distributed backend. auto = NCCL when every worker holds whole GPUs, else gloo "
        "(gloo reduces CUDA tensors too; NCCL refuses two ranks on one GPU).",
    )
    cpus_per_worker: PosFloat = Field(1.0, description="CPUs per Train worker; also its torch thread count.")
    memory_per_worker_gb: NonNegFloat = 0.0
    max_failures: Annotated[int, Field(ge=-1)] = 0
    report_every_steps: NonNegInt = Field(0, description="Also report every N steps (0 = per epoch only).")
    checkpoint_every_epochs: PosInt = 1
    keep_checkpoints: PosInt | None = 2
    storage: str = Field("./.superfan/runs", description="Local directory or s3:// URL for Ray results.")
    teacher: str | None = Field(None, description="Checkpoint of the HR teacher FAN (from `train fan`).")
    bf16: bool = Field(True, description="bf16 autocast on CUDA (ignored on CPU).")
    channels_last: bool = True
    compile: bool = Field(
        False,
        description="torch.compile the forward of the generator, FANs and ResNet-50 (Module.compile, weights "
        "and checkpoints unchanged) on CUDA; ignored on CPU, where CI keeps eager mode. The critic stays eager: "
        "the gradient penalty differentiates twice, which compiled graphs do not. Off until `superfan bench "
        "loop --compile` shows it pays (compilation costs minutes per stage).",
    )
    seed: int = 0

    @model_validator(mode="after")
    def _backend_fits(self) -> TrainConfig:
        if self.backend == "nccl" and self.use_gpu is False:
            raise ValueError("backend nccl needs GPUs (train.use_gpu false): use gloo or auto")
        if self.backend == "nccl" and self.gpus_per_worker < 1 and self.workers > 1:
            raise ValueError(
                f"backend nccl with gpus_per_worker {self.gpus_per_worker}: NCCL refuses two ranks on one GPU; "
                "use backend auto or gloo"
            )
        return self


class EvalConfig(_Strict):
    auc_threshold: PosFloat = Field(0.1, description="Table 2: AUC up to NME 0.1 (see [4]).")
    pose_bins: tuple[NonNegFloat, ...] = Field((0.0, 30.0, 60.0), description="Lower edges of the yaw bins.")


class Config(_Strict):
    """The whole run: what to build, what to optimise, on what data, how to evaluate."""

    profile: str = "paper"
    model: ModelConfig = ModelConfig()
    losses: LossesConfig = LossesConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    stages: list[StageConfig] = Field(default_factory=paper_stages, min_length=1)  #: at least one: nothing to train
    data: DataConfig = DataConfig()
    augment: AugmentConfig = AugmentConfig()
    degrade: DegradeConfig = DegradeConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()

    @model_validator(mode="after")
    def _stage_links(self) -> Config:
        seen: set[str] = set()
        for stage in self.stages:
            if stage.name in seen:
                raise ValueError(f"stage name {stage.name!r} is used twice")
            ref = stage.init_from
            if ref and not is_checkpoint_ref(ref) and ref not in seen:
                raise ValueError(f"stage {stage.name!r} starts from {ref!r}, which is not an earlier stage")
            seen.add(stage.name)
        return self

    def stage(self, name: str) -> StageConfig:
        for s in self.stages:
            if s.name == name:
                return s
        raise ConfigError(f"config has no stage {name!r} (stages: {', '.join(s.name for s in self.stages)})")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-safe dict (tuples become lists); round-trips through :func:`from_dict`."""
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ------------------------------------------------------------------------------------------- loading


def _format_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "config"
    got = first.get("input")
    got_s = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{source}: {loc}: {first['msg']}{got_s}{more}"


def from_dict(data: dict[str, Any], source: str = "config") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(err, source)) from None


def revalidated(cfg: Config, source: str, edit: Any) -> Config:
    """``cfg`` after ``edit(plain dict)``, validated again as a whole: command-line options (``--epochs``,
    ``--train-workers``) go through the same typed checks as the config file, and a bad value is the usual one
    line naming the option (``source``) and the field, never a pydantic traceback."""
    data = cfg.to_dict()
    edit(data)
    return from_dict(data, source)


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts; a list level is addressed by index or, for stages, by name
    (``stages.0.epochs`` or ``stages.teacher.epochs``)."""
    keys = dotted.split(".")
    node: Any = data
    for depth, k in enumerate(keys[:-1]):
        if isinstance(node, list):
            node = _list_item(node, k, ".".join(keys[: depth + 1]))
            continue
        if not isinstance(node.get(k), dict | list):
            node[k] = {}
        node = node[k]
    last = keys[-1]
    if isinstance(node, list):
        raise ConfigError(f"override {dotted}: {'.'.join(keys[:-1])} is a list; name a field of one of its items")
    node[last] = value


def _list_item(items: list[Any], key: str, where: str) -> Any:
    if key.isdigit() and int(key) < len(items):
        return items[int(key)]
    named = [x for x in items if isinstance(x, dict) and x.get("name") == key]
    if len(named) == 1:
        return named[0]
    names = [str(x.get("name")) for x in items if isinstance(x, dict) and "name" in x]
    raise ConfigError(f"override {where}: no item {key!r} (indices 0-{len(items) - 1}; names: {', '.join(names)})")


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any] | list[str] | None) -> dict[str, Any]:
    """Apply ``{"losses.pixel.weight": 2.0}`` or ``["losses.pixel.weight=2.0"]`` to a config dict."""
    out = copy.deepcopy(data)
    if not overrides:
        return out
    if isinstance(overrides, list):
        pairs: dict[str, Any] = {}
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. losses.pixel.weight=1.0")
            key, raw = item.split("=", 1)
            if not all(part.strip() for part in key.split(".")):
                raise ConfigError(f"override {item[:60]!r}: expected KEY=VALUE, KEY dotted, e.g. data.batch_size=8")
            try:
                pairs[key.strip()] = yaml.safe_load(raw)
            except yaml.YAMLError as err:
                reason = " ".join(str(getattr(err, "problem", None) or err).split())
                raise ConfigError(f"override {item[:60]!r}: the value is not valid YAML ({reason})") from None
        overrides = pairs
    for key, value in overrides.items():
        _set_dotted(out, key, value)
    return out


def profile_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("superfan.configs").iterdir() if p.name.endswith(".yaml"))


def read_text_file(path: Path, what: str) -> str:
    """A UTF-8 text file's contents; unreadable or not UTF-8 is one ``ConfigError`` line naming the file."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        byte = f"byte {err.start} is 0x{err.object[err.start]:02x}"
        raise ConfigError(f"{path}: {what} is not UTF-8 text ({byte})") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the {what} ({err.strerror or err})") from None


def _read_yaml(name_or_path: str) -> tuple[dict[str, Any], str]:
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"} or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file not found: {name_or_path}")
        text, source = read_text_file(path, "config file"), str(path)
    else:
        res = resources.files("superfan.configs") / f"{name_or_path}.yaml"
        if not res.is_file():
            raise ConfigError(
                f"unknown config profile {name_or_path!r} (packaged: {', '.join(profile_names())}; or give a path)"
            )
        text, source = res.read_text(), f"profile {name_or_path}"
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping")
    return data, source


def check_perceptual_weights(cfg: Config, source: str = "config") -> Config:
    """Refuse ``profile: paper`` without ``model.perceptual_weights``; returns ``cfg``.

    Without an ImageNet ResNet-50, Eq. 2 is a random-projection loss and every paper-profile result (and the
    beta axis of the loss-weight sweep) would be about a loss the paper does not have. The ``tiny`` profile
    (CPU demo, no downloads) keeps random features with its loud warning; ``paper`` must say which it
    wants: weights, or ``random`` explicitly.
    """
    if cfg.profile == "paper" and cfg.model.perceptual_weights is None:
        where = "profile paper" + ("" if source in {"config", "profile paper"} else f" ({source})")
        raise ConfigError(
            f"{where}: model.perceptual_weights is unset: the perceptual loss (Eq. 2) needs an ImageNet "
            "ResNet-50 state dict (file or URL); set it (model.perceptual_weights=PATH_OR_URL), or set it to "
            f"'{RANDOM_PERCEPTUAL_WEIGHTS}' to train with random features knowingly"
        )
    return cfg


def load_config(
    name_or_path: str | None = None,
    overrides: dict[str, Any] | list[str] | None = None,
    *,
    for_training: bool = True,
) -> Config:
    """A packaged profile (``paper``, ``tiny``) or a YAML path; ``base: NAME`` in a file inherits a profile.

    Sweep configs in ``sweeps/configs/`` use ``base:`` to name the profile and add a ``search:`` block,
    which this function ignores (the sweep driver reads it).

    ``for_training`` (default): a config read from a profile or file must pass
    :func:`check_perceptual_weights`, so ``superfan train`` and the sweeps refuse the paper profile without
    perceptual weights before Ray starts. Callers that only read shapes, data or bins (``superfan
    evaluate``, ``superfan config``, the speed benchmarks) pass ``False``. ``load_config(None)`` (the field
    defaults, used by tests and code) is never checked; neither is :func:`from_dict`, so checkpoints saved
    with ``perceptual_weights: null`` still load.
    """
    if name_or_path is None:
        data, source = {}, "defaults"
    else:
        data, source = _read_yaml(name_or_path)
    data = dict(data)
    data.pop("search", None)
    data.pop("sweep", None)
    base = data.pop("base", None)
    if base:
        base_data, _ = _read_yaml(str(base))
        base_data.pop("base", None)
        data = _deep_merge(base_data, data)
    try:
        cfg = from_dict(apply_overrides(data, overrides), source)
    except ConfigError:
        if not overrides:
            raise
        from_dict(data, source)  # the file alone is bad: say so, naming the file
        cfg = from_dict(apply_overrides(data, overrides), "command-line override")  # else the override is
    if for_training and name_or_path is not None:
        check_perceptual_weights(cfg, source)
    return cfg


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in top.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
