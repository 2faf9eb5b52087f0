"""What a sweep is: its settings (``sweep:``), the sweep file as one typed model, and the resolved :class:`Sweep`.

A sweep file (``sweeps/configs/*.yaml``) is a config file with a ``base:`` profile, any config overrides,
a ``sweep:`` block (:class:`SweepSettings`) and a ``search:`` block with one section per sweep kind
(grammar: :mod:`sweeps.space`). :func:`read_sweep_file` validates it as one :class:`SweepFile` (the config
sections are checked to be ``Config`` fields there and validated by ``superfan.config.Config`` itself, with
the profile and the command line's overrides, in :meth:`SweepFile.load_config`) and turns the first problem
into one :class:`~superfan.errors.ConfigError` line naming the field, e.g.
``sweeps/configs/x.yaml: search.loss_weights.losses.pixel.weight: 'low' is required for type uniform``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from superfan import storage
from superfan.config import MAX_EPOCHS, Config, _not_bool, from_dict, load_config, read_text_file
from superfan.errors import ConfigError
from sweeps.space import FIXED, SPEC_TYPES, Section

METRIC = "val_auc_balanced"
#: The epoch count the training loop reports: ASHA's time attribute (see sweeps.tuner.build_tuner) and the
#: step at which the searcher records a trial's results.
TIME_ATTR = "global_epoch"
#: The sweep scripts, one ``search:`` section each.
KINDS = ("loss_weights", "block_layouts", "augmentation")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


#: Upper bounds, checked before Ray starts: counts (epochs, trials, workers, concurrency, grace period) and
#: the synthetic faces packed when no data is given.
MAX_COUNT = MAX_EPOCHS
MAX_SYNTHETIC = 1_000_000
#: A count that must be at least 1 (epochs, trials, workers, concurrency): 0 or less is a typo, never a setting.
Count = Annotated[int, BeforeValidator(_not_bool), Field(ge=1, le=MAX_COUNT)]


class SweepSettings(_Strict):
    """The ``sweep:`` block of a sweep file, after command-line overrides. Saved as ``sweep.json``."""

    samples: Count = 4
    metric: str = METRIC
    mode: Literal["max", "min"] = "max"
    multi_objective: bool = False
    secondary_metric: str = "val_psnr"
    #: stage names to run per trial (default: all non-teacher stages; an empty list is an error, not the default)
    stages: list[str] | None = Field(None, min_length=1)
    epochs: Count | dict[str, Count] | None = None  #: per selected stage (int) or per name
    teacher_epochs: Count | None = None  #: epochs of the teacher stage when the sweep trains the teacher
    grace_period: int = Field(1, ge=1, le=MAX_COUNT)
    reduction_factor: int = Field(2, ge=2)
    workers_per_trial: Count | None = None  #: default: the config's train.workers
    #: trials at once. Default: GPU trials all at once (their pending placement groups are what makes an
    #: autoscaler start GPU nodes); CPU trials as many as the cluster's CPUs fit now.
    max_concurrent: Count | None = None
    keep_checkpoints: int = Field(2, ge=1)  #: per trial, the best by ``metric`` (plus Train's latest)
    #: stages whose reports may be promoted (default: the last stage run, so a Super-FAN sweep promotes a
    #: Super-FAN checkpoint, not an earlier stage's that happened to score higher on a small val set)
    promote_stages: list[str] | None = Field(None, min_length=1)
    trial_memory_gb: float = Field(0.25, ge=0)  #: what the (CPU-less) trial actor reserves
    #: stop starting new trials once the trials' device-hours add up to this (sweeps/budget.py)
    budget_hours: float | None = Field(None, gt=0)
    seed: int = Field(0, ge=0, le=2**32 - 1)  #: Optuna's and NumPy's seed range
    #: the Optuna study's storage: an RDB URL (sqlite:///path.db, postgresql://..., mysql://...) or
    #: journal:PATH (Optuna's journal file, for a shared filesystem); None: sweeps.searcher.default_storage
    optuna_storage: str | None = None
    #: MLflow tracking URI: every trial's params, metrics per epoch and tags, and the champion as a registered
    #: model version with the alias "champion" (needs the optional `mlflow` extra); None: off
    mlflow: str | None = None
    synthetic_train: int = Field(512, ge=1, le=MAX_SYNTHETIC)
    synthetic_val: int = Field(128, ge=1, le=MAX_SYNTHETIC)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, source: str) -> SweepSettings:
        """Validated settings; a problem is one ``ConfigError`` line (``<source>: sweep.<field>: ...``)."""
        try:
            return cls.model_validate(dict(data or {}))
        except ValidationError as err:
            raise ConfigError(format_error(err, source, prefix=("sweep",))) from None

    def with_options(self, options: dict[str, Any]) -> SweepSettings:
        """These settings with command-line values (``None``: not given); an error names the option."""
        given = {k: v for k, v in options.items() if v is not None}
        try:
            return type(self).model_validate({**self.model_dump(), **given})
        except ValidationError as err:
            first = err.errors()[0]
            option = "--" + str(first["loc"][0]).replace("_", "-") if first["loc"] else "command line"
            raise ConfigError(f"{option}: {first['msg']} (got {first.get('input')!r})") from None


class SearchSections(_Strict):
    """The ``search:`` block: one section per sweep script."""

    loss_weights: Section | None = None
    block_layouts: Section | None = None
    augmentation: Section | None = None


class SweepFile(BaseModel):
    """A whole sweep file. Keys other than ``base``, ``sweep`` and ``search`` are config overrides: each must
    be a ``Config`` field here, and :meth:`load_config` validates them with the profile as ``Config``."""

    model_config = ConfigDict(extra="allow")

    base: str | None = None
    sweep: SweepSettings = Field(default_factory=SweepSettings)
    search: SearchSections = Field(default_factory=SearchSections)
    _path: str = PrivateAttr("")  #: where it was read from

    @field_validator("sweep", "search", mode="before")
    @classmethod
    def _empty_block(cls, v: Any) -> Any:
        return {} if v is None else v

    @model_validator(mode="after")
    def _config_keys(self) -> SweepFile:
        for key in self.model_extra or {}:
            if key not in Config.model_fields:
                raise ValueError(
                    f"{key}: unknown key (a sweep file has base, sweep, search and config sections: "
                    f"{', '.join(Config.model_fields)})"
                )
        return self

    def section(self, kind: str) -> dict[str, Any]:
        """The ``search.<kind>`` section (specs as models, fixed values as given)."""
        section = getattr(self.search, kind, None)
        if not section:
            raise ConfigError(f"{self._path}: search: has no {kind!r} section")
        return dict(section)

    def load_config(self, overrides: list[str] | None = None) -> Config:
        """The base profile with this file's config sections and ``overrides``, validated as ``Config``."""
        return load_config(self._path, list(overrides or []))


def read_sweep_file(path: str) -> SweepFile:
    """Read and validate a sweep file; any problem is one ``ConfigError`` line naming the file and field."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"sweep config not found: {path}")
    try:
        data = yaml.safe_load(read_text_file(p, "sweep config")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    try:
        sweep_file = SweepFile.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_error(err, str(path))) from None
    sweep_file._path = str(path)
    return sweep_file


def _known(loc: tuple[str, ...]) -> list[str] | None:
    """The keys allowed where ``loc`` (an unknown key's location) points, for the error message."""
    parent = loc[:-1]
    if parent == ("sweep",):
        return list(SweepSettings.model_fields)
    if parent == ("search",):
        return list(SearchSections.model_fields)
    if len(parent) == 4 and parent[0] == "search" and parent[3] in SPEC_TYPES:
        fields = SPEC_TYPES[parent[3]].model_fields
        return [f.alias or name for name, f in fields.items()]
    return None


def format_error(err: ValidationError, source: str, prefix: tuple[str, ...] = ()) -> str:
    """The first validation error as one line: ``<source>: <dotted field>: <what is wrong>``.

    Spec errors are located as ``search.<kind>.<key>`` (the spec type pydantic puts in the location is
    dropped; it is in the message)."""
    first = err.errors()[0]
    loc = (*prefix, *(str(p) for p in first["loc"]))
    kind, msg, ctx = first["type"], first["msg"], first.get("ctx") or {}
    tag = loc[3] if len(loc) > 3 and loc[0] == "search" and loc[3] in SPEC_TYPES else None
    where = loc[:3] + loc[4:] if tag else loc
    got = first.get("input")
    got_s = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
    if kind == "missing" and tag:
        where, msg, got_s = loc[:3], f"'{loc[-1]}' is required for type {tag}", ""
    elif kind == "extra_forbidden":
        known = _known(loc)
        msg = f"unknown key (known: {', '.join(known)})" if known else "unknown key"
        got_s = ""
    elif kind == "union_tag_invalid":
        msg, got_s = f"unknown type {ctx.get('tag')!r} (known: {', '.join(SPEC_TYPES)})", ""
    elif kind == "union_tag_not_found":
        msg = f"a spec needs a 'type' ({', '.join(SPEC_TYPES)}); a fixed value is a plain value"
        got_s = ""
    elif kind == "value_error":
        msg = msg.removeprefix("Value error, ")
        got_s = ""
    dotted = ".".join(p for p in where if p != FIXED)
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{source}: {dotted}: {msg}{got_s}{more}" if dotted else f"{source}: {msg}{got_s}{more}"


@dataclass
class Sweep:
    """Everything a sweep needs, resolved once and stored beside the experiment for ``--resume``."""

    kind: str
    name: str
    storage: str
    config: Config  #: base config (with fixed overrides); a dict only in JSON and in Tune's param space
    space: dict[str, dict[str, Any]]  #: parameter -> spec (see :func:`sweeps.space.tune_space`)
    settings: SweepSettings
    stages: list[str]
    teacher: str | None = None
    config_file: str | None = None
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S"))

    @property
    def experiment_url(self) -> str:
        return storage.join(self.storage, "sweeps", self.name)

    @property
    def trials_url(self) -> str:
        return storage.join(self.storage, "trials", self.name)

    @property
    def total_epochs(self) -> int:
        """Epochs of one trial: the selected stages' (what ``global_epoch`` reaches on a trial's last report)."""
        by_name = {s.name: s.epochs for s in self.config.stages}
        return sum(by_name[n] for n in self.stages)

    def to_json(self) -> str:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["settings"] = self.settings.model_dump(mode="json")
        data["config"] = self.config.to_dict()
        return json.dumps(data, indent=2)

    @classmethod
    def from_json(cls, text: str) -> Sweep:
        data = json.loads(text)
        data["settings"] = SweepSettings.model_validate(data["settings"])
        data["config"] = from_dict(data["config"], "sweep state config")
        return cls(**data)
