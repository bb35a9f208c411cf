"""The Experiment record, the config fields every experiment shares, and `--set` overrides."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from badgerlab.errors import UserError

__all__ = [
    "SCALES",
    "Count",
    "Fraction",
    "ConfigError",
    "Experiment",
    "ExperimentConfig",
    "PaperVariant",
    "build_config",
    "check_device_present",
    "parse_overrides",
]

SCALES = ("smoke", "quick", "paper")

# Element types for list-valued config fields, so that each entry is bounded too.
Count = Annotated[int, Field(ge=1, le=10_000_000)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class ConfigError(UserError):
    """A user's configuration is wrong: unknown key, bad type or value out of range."""


class ExperimentConfig(BaseModel):
    """Fields shared by every experiment's Config; subclass it and add the experiment's own.

    The field defaults of a subclass are its `quick` scale; `Experiment.scales` holds the
    `smoke` and `paper` presets as overrides of those defaults.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    seed: int = Field(0, ge=0, le=2**31 - 1, description="first random seed")
    seeds: int = Field(
        1, ge=1, le=100, description="seeds run inside one Run: seed .. seed+seeds-1"
    )
    scale: Literal["smoke", "quick", "paper"] = Field("quick", description="size preset")
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?)$", description="torch device")
    threads: int = Field(1, ge=1, le=256, description="torch intra-op threads for this process")
    tensorboard: bool = Field(False, description="also write metrics to a TensorBoard log")


@dataclass(frozen=True)
class PaperVariant:
    """A variant of an experiment on real data, run by `reproduce` only when its data is found.

    `overrides` are applied on top of the scale preset; `datasets` must all be loadable offline.
    """

    name: str
    overrides: Mapping[str, Any]
    datasets: tuple[str, ...]
    description: str = ""


@dataclass(frozen=True)
class Experiment:
    """One paper experiment: its Config model, its presets per scale, and three steps.

    `train(cfg, run) -> results` does the work in resumable units (`run.units`);
    `plots(cfg, results, run)` saves figures; `claims(cfg, results) -> list[Claim]` states what
    was measured. `run(cfg, run)` composes them (an experiment may pass its own `run` instead).
    `devices` lists the device types the experiment runs on (`cpu`, `cuda`); any other device
    in the config is refused when the config is built.
    """

    name: str
    paper: str
    bibtex: str
    description: str
    minutes: Mapping[str, float]
    Config: type[ExperimentConfig]
    train: Callable[..., Any] | None = None
    plots: Callable[..., Any] | None = None
    claims: Callable[..., Any] | None = None
    run: Callable[..., Any] | None = None
    scales: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    variants: tuple[PaperVariant, ...] = ()
    devices: tuple[str, ...] = ("cpu",)

    def __post_init__(self) -> None:
        unknown = set(self.scales) - set(SCALES)
        if unknown:
            raise ValueError(f"experiment {self.name!r}: unknown scale presets {sorted(unknown)}")
        if not issubclass(self.Config, ExperimentConfig):
            raise TypeError(f"experiment {self.name!r}: Config must subclass ExperimentConfig")
        steps = (self.train, self.plots, self.claims)
        if self.run is None and any(f is None for f in steps):
            raise TypeError(f"experiment {self.name!r}: give train, plots and claims (or run)")
        bad = set(self.devices) - {"cpu", "cuda"}
        if bad or not self.devices:
            raise ValueError(f"experiment {self.name!r}: devices must be cpu/cuda, got {bad}")

    def execute(self, cfg: ExperimentConfig, run: Any) -> list[Any]:
        """Train, plot and state the claims; returns the claims."""
        if self.run is not None:
            return list(self.run(cfg, run) or [])
        assert self.train and self.plots and self.claims
        results = self.train(cfg, run)
        self.plots(cfg, results, run)
        return list(self.claims(cfg, results))

    def config(
        self, scale: str = "quick", overrides: Mapping[str, Any] | None = None
    ) -> ExperimentConfig:
        """The validated config for `scale` with `overrides` (dotted keys) applied on top."""
        cfg = build_config(self.Config, self.scales.get(scale, {}), overrides or {}, scale=scale)
        self.check_device(cfg.device)
        return cfg

    def check_device(self, device: str) -> None:
        """Refuse a device this experiment does not support, or one this machine lacks."""
        kind = device.split(":")[0]
        if kind not in self.devices:
            raise ConfigError(
                f"device={device!r}: {self.name} runs on {', '.join(self.devices)} only"
            )
        check_device_present(device)


def check_device_present(device: str) -> None:
    """A `ConfigError` when `device` (e.g. `cuda:1`) does not exist on this machine."""
    import torch

    kind, _, index = device.partition(":")
    if kind != "cuda":
        return
    if not torch.cuda.is_available():
        raise ConfigError(f"device={device!r}: this torch build or machine has no CUDA device")
    count = torch.cuda.device_count()
    if index and int(index) >= count:
        raise ConfigError(f"device={device!r}: this machine has {count} CUDA device(s)")


def _set_dotted(target: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = target
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _dump_defaults(model: type[BaseModel]) -> dict[str, Any]:
    # Nested models need their defaults as dicts so that a dotted override merges into them.
    out: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if info.is_required():
            continue
        default = info.get_default(call_default_factory=True)
        out[name] = default.model_dump() if isinstance(default, BaseModel) else default
    return out


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if "." in key:
            _set_dotted(out, key, value)
        elif isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def build_config(
    model: type[ExperimentConfig],
    preset: Mapping[str, Any],
    overrides: Mapping[str, Any],
    *,
    scale: str = "quick",
) -> ExperimentConfig:
    """Defaults, then the scale preset, then the overrides; raises `ConfigError` on bad input."""
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; expected one of {', '.join(SCALES)}")
    data = _merge(_dump_defaults(model), preset)
    data["scale"] = scale
    if "scale" in overrides and overrides["scale"] != scale:
        raise ConfigError(
            f"--set scale={overrides['scale']!r} would record one scale and run another; "
            "use --scale"
        )
    data = _merge(data, overrides)
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        if first["type"] == "extra_forbidden":
            known = ", ".join(sorted(model.model_fields))
            raise ConfigError(f"unknown config key {where!r} (known keys: {known})") from None
        given = first.get("input")
        raise ConfigError(f"config {where}={given!r}: {first['msg']}") from None


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Parse `key=value` strings; a value is read as JSON, and kept as a string otherwise.

    >>> parse_overrides(["population=64", "dataset=mnist", "opt.lr=1e-3", "flag=true"])
    {'population': 64, 'dataset': 'mnist', 'opt.lr': 0.001, 'flag': True}
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key] = value
    return out
