"""The search grammar of a sweep file's ``search.<kind>`` section, and what it becomes: specs, Tune domains.

Each key is a dotted config field; each value is a spec (a mapping with ``type``) or a plain value fixed for
every trial::

    KEY: {type: loguniform, around: F}      value/F .. value*F around the config's value
    KEY: {type: loguniform, low: A, high: B}
    KEY: {type: uniform, low: A, high: B}   KEY: {type: int, low: A, high: B}
    KEY: {type: choice, values: [...]}      lists are allowed as values (layouts, ranges)
    KEY: {type: layouts, total: [LO, HI], max: [N1, N2, N3], min: 1, include: [[12, 3, 2], [16, 1, 1]]}
    KEY: VALUE                              fixed for every trial

The typed spec models below check the shape of a section (:mod:`sweeps.settings` reads the file);
:func:`resolve_space` checks each spec against the config's own value, which becomes the first point, checks
that every value a trial can get builds a valid ``Config`` (:func:`check_candidates`: a choice of strings
for ``data.batch_size`` is one line before Ray starts, not a trial that errors inside it), and turns it
into the plain spec dict stored in ``sweep.json`` (``{"type": "loguniform", "low": .., "high": ..}`` or
``{"type": "choice", "values": [..]}``); :func:`tune_space` makes Tune domains of those.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator
from pydantic_core import to_jsonable_python

from superfan.config import Config, apply_overrides
from superfan.errors import ConfigError

#: The discriminator's tag of a plain (fixed) value; no spec ``type`` can be spelled like it.
FIXED = "(fixed value)"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class LogUniformSpec(_Spec):
    type: Literal["loguniform"]
    around: float | None = None  #: a factor > 1: the config's value / F .. value * F
    low: float | None = None
    high: float | None = None

    @model_validator(mode="after")
    def _bounds(self) -> LogUniformSpec:
        if self.around is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give 'around' or 'low'/'high', not both")
            if not self.around > 1:
                raise ValueError(f"'around' must be a factor > 1 (got {self.around:g})")
            return self
        for name in ("low", "high"):
            if getattr(self, name) is None:
                raise ValueError(f"'{name}' is required for type loguniform (or give 'around')")
        if not 0 < self.low < self.high:  # type: ignore[operator]
            raise ValueError(f"loguniform needs 0 < low < high (got {self.low:g}, {self.high:g})")
        return self


class UniformSpec(_Spec):
    type: Literal["uniform"]
    low: float
    high: float

    @model_validator(mode="after")
    def _bounds(self) -> UniformSpec:
        if not self.low < self.high:
            raise ValueError(f"uniform needs low < high (got {self.low:g}, {self.high:g})")
        return self


class IntSpec(_Spec):
    type: Literal["int"]
    low: int
    high: int  #: inclusive

    @model_validator(mode="after")
    def _bounds(self) -> IntSpec:
        if not self.low <= self.high:
            raise ValueError(f"int needs low <= high (got {self.low}, {self.high})")
        return self


class ChoiceSpec(_Spec):
    type: Literal["choice"]
    values: list[Any] = Field(min_length=1)


class LayoutsSpec(_Spec):
    type: Literal["layouts"]
    total: list[int] = Field(min_length=1, max_length=2)  #: [LO, HI] residual blocks in all (or [N])
    min_blocks: int = Field(1, alias="min", ge=0)
    max_blocks: list[int] | None = Field(None, alias="max", min_length=3, max_length=3)
    include: list[list[int]] = []


#: Spec type -> model; the order is the one error messages list.
SPEC_TYPES: dict[str, type[_Spec]] = {
    "loguniform": LogUniformSpec,
    "uniform": UniformSpec,
    "int": IntSpec,
    "choice": ChoiceSpec,
    "layouts": LayoutsSpec,
}


def _entry_tag(value: Any) -> str | None:
    """A mapping is a spec named by its ``type`` (None: no type); anything else is a fixed value."""
    if isinstance(value, BaseModel):
        return getattr(value, "type", FIXED)
    if isinstance(value, Mapping):
        tag = value.get("type")
        return None if tag is None else str(tag)
    return FIXED


#: One key of a section: a spec, or a value fixed for every trial.
Entry = Annotated[
    Annotated[LogUniformSpec, Tag("loguniform")]
    | Annotated[UniformSpec, Tag("uniform")]
    | Annotated[IntSpec, Tag("int")]
    | Annotated[ChoiceSpec, Tag("choice")]
    | Annotated[LayoutsSpec, Tag("layouts")]
    | Annotated[Any, Tag(FIXED)],
    Discriminator(_entry_tag),
]
#: A ``search.<kind>`` section: dotted config field -> entry.
Section = dict[str, Entry]


# ------------------------------------------------------------------------------ values Optuna can hold


def encode(value: Any) -> Any:
    """Optuna categoricals hold only scalars: a list choice (a layout, a range) travels as ``"12-3-2"``."""
    if isinstance(value, list | tuple):
        return "-".join(str(v) for v in value)
    return value


def decode(value: Any) -> Any:
    """The inverse of :func:`encode` (``"12-3-2"`` -> ``[12, 3, 2]``); other values pass through."""
    if isinstance(value, str) and value and all(p.lstrip("-").replace(".", "", 1).isdigit() for p in value.split("-")):
        parts = value.split("-")
        return [int(p) if p.isdigit() else float(p) for p in parts]
    return value


def layouts(
    total: Sequence[int],
    min_blocks: int = 1,
    max_blocks: Sequence[int] | None = None,
    include: Sequence[Sequence[int]] = (),
) -> list[list[int]]:
    """Generator layouts N1-N2-N3 with ``total[0] <= N1+N2+N3 <= total[1]`` blocks (the budget).

    Blocks at 32 and 64 px cost 4x and 16x a 16 px block, so ``max_blocks`` caps each level to keep the
    categorical small and the compute comparable; ``include`` adds layouts outside the rule (the paper's
    12-3-2 and SRResNet's 16-1-1 are always worth a trial).
    """
    lo, hi = (int(total[0]), int(total[-1]))
    caps = list(max_blocks) if max_blocks else [hi, hi, hi]
    out = [
        [a, b, c]
        for a in range(min_blocks, caps[0] + 1)
        for b in range(min_blocks, caps[1] + 1)
        for c in range(min_blocks, caps[2] + 1)
        if lo <= a + b + c <= hi
    ]
    for extra in include:
        if list(extra) not in out:
            out.append([int(v) for v in extra])
    return out


# ----------------------------------------------------------------------------- section -> specs -> Tune


def config_value(config: Config | Mapping[str, Any], dotted: str, where: str = "search") -> Any:
    """The value of a dotted config field (``losses.pixel.weight``), in its JSON form (tuples as lists), of a
    ``Config`` or of its ``to_dict()``."""
    node: Any = config
    for key in dotted.split("."):
        if isinstance(node, BaseModel) and key in type(node).model_fields:
            node = getattr(node, key)
        elif isinstance(node, Mapping) and key in node:
            node = node[key]
        else:
            raise ConfigError(f"{where}: {dotted!r} is not a config field")
    return to_jsonable_python(node)


def fixed_values(section: Mapping[str, Any]) -> dict[str, Any]:
    """The section's plain values: config overrides for every trial."""
    return {k: v for k, v in section.items() if not isinstance(v, BaseModel | Mapping)}


def resolve_space(
    section: Mapping[str, Any], config: Config | Mapping[str, Any], where: str
) -> dict[str, dict[str, Any]]:
    """The section's searched keys as plain specs, each checked against the config's own value.

    ``config`` is the base config with the section's fixed values applied. The config's value becomes
    the first point evaluated (:func:`default_point`), so it must lie in the range; a choice that lacks
    it gains it (first). ``where`` (``"<file>: search.<kind>"``) starts every error message.
    """
    specs: dict[str, dict[str, Any]] = {}
    base = config.to_dict() if isinstance(config, Config) else dict(config)
    for key, spec in section.items():
        if not isinstance(spec, BaseModel):
            continue
        at = f"{where}.{key}"
        default = config_value(config, key, where)
        if isinstance(spec, LogUniformSpec):
            if spec.around is not None:
                if not (isinstance(default, int | float) and not isinstance(default, bool) and default > 0):
                    raise ConfigError(f"{at}: 'around' needs a positive config value (got {default!r})")
                low, high = default / spec.around, default * spec.around
            else:
                low, high = float(spec.low), float(spec.high)  # type: ignore[arg-type]
            s: dict[str, Any] = {"type": "loguniform", "low": low, "high": high}
        elif isinstance(spec, UniformSpec | IntSpec):
            s = {"type": spec.type, "low": spec.low, "high": spec.high}
        elif isinstance(spec, ChoiceSpec):
            s = {"type": "choice", "values": [encode(v) for v in spec.values]}
        else:
            assert isinstance(spec, LayoutsSpec)
            found = layouts(spec.total, spec.min_blocks, spec.max_blocks, spec.include)
            s = {"type": "choice", "values": [encode(v) for v in found]}
        if s["type"] == "choice":
            if encode(default) not in s["values"]:
                s["values"].insert(0, encode(default))
        elif not (
            isinstance(default, int | float) and not isinstance(default, bool) and s["low"] <= default <= s["high"]
        ):
            raise ConfigError(f"{at}: the config's value {default!r} is outside [{s['low']}, {s['high']}]")
        check_candidates(base, key, s, at)
        specs[key] = s
    return specs


def check_candidates(base: Mapping[str, Any], key: str, spec: Mapping[str, Any], at: str) -> None:
    """Every value a trial can be given for ``key`` builds a valid ``Config`` (:func:`trial_config`, exactly
    as the trial will), so a bad one is one line naming the parameter and the value before Ray starts, not a
    trial that errors inside Ray: each choice; a range's ends, and for ``uniform``/``loguniform`` a value
    between them with a fraction (a continuous range over an integer field such as ``data.batch_size``)."""
    if spec["type"] == "choice":
        candidates = [("choice", v) for v in spec["values"]]
    else:
        low, high = spec["low"], spec["high"]
        candidates = [("low", low), ("high", high)]
        if spec["type"] != "int":  # a point inside that is not a whole number
            fractions = (1 / 3, 0.382, 0.618, 0.5 + 1e-6)
            log = spec["type"] == "loguniform"
            points = [low * (high / low) ** f if log else low + (high - low) * f for f in fractions]
            candidates.append((f"{spec['type']} value", next((p for p in points if not p.is_integer()), points[0])))
    for what, value in candidates:
        try:
            trial_config(base, {key: value})
        except ConfigError as err:
            reason = str(err).removeprefix("trial config: ")
            hint = " (a uniform or loguniform range gives fractions: use type: int)" if what.endswith(" value") else ""
            shown = decode(value) if isinstance(value, str) and "-" in value else value  # a layout as a list
            raise ConfigError(f"{at}: {what} {shown!r} is not a valid value: {reason}{hint}") from None


def tune_space(specs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Tune domains for Optuna (converted by ``OptunaSearch`` from the Tuner's ``param_space``)."""
    from ray import tune

    out: dict[str, Any] = {}
    for key, s in specs.items():
        if s["type"] == "loguniform":
            out[key] = tune.loguniform(s["low"], s["high"])
        elif s["type"] == "uniform":
            out[key] = tune.uniform(s["low"], s["high"])
        elif s["type"] == "int":
            out[key] = tune.randint(int(s["low"]), int(s["high"]) + 1)
        else:
            out[key] = tune.choice(list(s["values"]))
    return out


def default_point(specs: Mapping[str, Any], config: Config | Mapping[str, Any]) -> dict[str, Any]:
    """The config's own values of the searched keys: Optuna evaluates this point first."""
    return {key: encode(config_value(config, key)) for key in specs}


def trial_config(base: Mapping[str, Any], params: Mapping[str, Any]) -> Config:
    """The trial's ``Config``: base plus its parameters (decoded list choices), validated."""
    from superfan.config import from_dict

    return from_dict(apply_overrides(dict(base), {k: decode(v) for k, v in params.items()}), "trial config")
