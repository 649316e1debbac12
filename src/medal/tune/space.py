"""The search space of `medal tune`: a small YAML file, one dotted config key per entry.

    train.lr: {float: [1.0e-4, 1.0e-2], log: true}      # a float in [low, high]; log: sample its logarithm
    train.weight_decay: {float: [0.0, 0.1], step: 0.01}  # step: a grid from low to high
    train.epochs: {int: [2, 6], step: 2}                 # an int in [low, high] (log or step optional)
    train.augment: {categorical: [light, flips, photo]}  # one of the values (str, number, bool or null)

Only recipe keys (seed, model.*, train.*) may be searched: nothing else changes the trained weights, and the
metric is the objective. Every value a trial could suggest (both ends of a range, every choice) is validated
as a config (medal.core.config.derive) before the first trial, so a typo fails at once, naming the key.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from medal.core.config import Config, ConfigError, derive

KINDS = ("float", "int", "categorical")
OPTIONS = {"float": {"log", "step"}, "int": {"log", "step"}, "categorical": set()}
RECIPE_SECTIONS = ("model", "train")


@dataclass(frozen=True)
class Param:
    """One searched key: `kind` float/int with [low, high] (log or step), or categorical with `choices`."""
    key: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple = ()

    def suggest(self, trial) -> Any:
        """This key's value for an Optuna trial (the param is named by the dotted key)."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.key, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def accepts(self, value: Any) -> bool:
        """Whether Optuna takes `value` as this key's fixed value: any number for a range (Optuna warns when
        it lies outside), only a listed value for a choice."""
        if self.kind == "categorical":
            return any(value == c and type(value) is type(c) for c in self.choices)
        return isinstance(value, int | float) and not isinstance(value, bool)

    def values(self) -> list:
        """The values to validate up front: both ends of a range, every choice."""
        return list(self.choices) if self.kind == "categorical" else [self.low, self.high]

    def describe(self) -> str:
        if self.kind == "categorical":
            return f"{self.key} in {list(self.choices)}"
        extra = " log" if self.log else f" step {self.step:g}" if self.step else ""
        return f"{self.key} {self.kind} [{self.low:g}, {self.high:g}]{extra}"


def override(key: str, value: Any) -> str:
    """`key=value` with the value written so that YAML reads it back as the same value (1e-05 stays a float)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1_000_000).strip()
    return f"{key}={text.removesuffix('...').strip()}"


def load_space(path: str | Path) -> list[Param]:
    """Read and check a space file's format; each error names the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"search space file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"search space {path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"search space {path} must be a non-empty mapping of dotted config keys, e.g. "
                          "`train.lr: {float: [1.0e-4, 1.0e-2], log: true}`")
    return [_param(path, str(key), spec) for key, spec in raw.items()]


def _param(path: Path, key: str, spec: Any) -> Param:
    where = f"search space {path}: {key}"
    section = key.split(".")[0]
    if key == "metric":
        raise ConfigError(f"{where}: the metric is the objective, not a parameter to search")
    if key != "seed" and (section not in RECIPE_SECTIONS or "." not in key):
        raise ConfigError(f"{where}: only recipe keys (seed, model.*, train.*) can be searched; {key!r} does not "
                          "change the trained weights")
    kinds = [k for k in KINDS if isinstance(spec, dict) and k in spec]
    if len(kinds) != 1:
        raise ConfigError(f"{where}: give exactly one of float: [low, high], int: [low, high] or "
                          f"categorical: [values...] (got {spec!r})")
    kind = kinds[0]
    unknown = sorted(set(spec) - {kind} - OPTIONS[kind])
    if unknown:
        allowed = sorted(OPTIONS[kind]) or "none"
        raise ConfigError(f"{where}: unknown option(s) {unknown} for {kind} (allowed: {allowed})")
    if kind == "categorical":
        return _categorical(where, key, spec[kind])
    return _range(where, key, kind, spec)


def _categorical(where: str, key: str, choices: Any) -> Param:
    if not isinstance(choices, list) or not choices:
        raise ConfigError(f"{where}: categorical needs a non-empty list of values (got {choices!r})")
    bad = [c for c in choices if c is not None and not isinstance(c, bool | int | float | str)]
    if bad:
        raise ConfigError(f"{where}: a choice must be a string, a number, true/false or null (got {bad[0]!r})")
    if len({(type(c), c) for c in choices}) != len(choices):
        raise ConfigError(f"{where}: the choices {choices} repeat a value")
    return Param(key, "categorical", choices=tuple(choices))


def _number(value: Any) -> Any:
    """YAML 1.1 reads `1e-4` (no dot) as a string; take it as the number it spells, as the config does."""
    if isinstance(value, str):
        try:
            return int(value) if value.strip().lstrip("+-").isdigit() else float(value)
        except ValueError:
            return value
    return value


def _range(where: str, key: str, kind: str, spec: dict) -> Param:
    bounds, log, step = spec[kind], spec.get("log", False), _number(spec.get("step"))
    if isinstance(bounds, list):
        bounds = [_number(b) for b in bounds]
    number = int if kind == "int" else (int, float)
    if (not isinstance(bounds, list) or len(bounds) != 2
            or not all(isinstance(b, number) and not isinstance(b, bool) for b in bounds)):
        raise ConfigError(f"{where}: {kind} needs [low, high], two {'integers' if kind == 'int' else 'numbers'} "
                          f"(got {bounds!r})")
    low, high = bounds
    if not all(math.isfinite(b) for b in bounds) or low >= high:
        raise ConfigError(f"{where}: bad range [{low}, {high}]: low must be below high")
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false (got {log!r})")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range must start above 0 (got low {low})")
    if step is not None:
        if not isinstance(step, number) or isinstance(step, bool) or step <= 0 or step > high - low:
            raise ConfigError(f"{where}: step must be a number above 0 and at most high - low (got {step!r})")
        if log:
            raise ConfigError(f"{where}: log and step cannot be combined (Optuna samples one or the other)")
    return Param(key, kind, low=low, high=high, log=log, step=step)


def check_space(cfg: Config, params: list[Param], path: str | Path) -> None:
    """Validate every value a trial could suggest as a config (each alone, over `cfg`), before any trial runs."""
    for param in params:
        for value in param.values():
            try:
                derive(cfg, [override(param.key, value)])
            except ConfigError as err:
                detail = str(err).split("\n", 1)[-1].strip()
                raise ConfigError(f"search space {path}: {param.key}: the config refuses {param.key}={value!r}: "
                                  f"{detail}") from None
        if param.key == "model.backbone":  # the config takes any string; timm decides at the first trial's build
            _check_backbones(param.values(), path)


def _check_backbones(names: list, path: str | Path) -> None:
    import timm

    for name in names:
        if not isinstance(name, str) or not timm.is_model(name):
            close = difflib.get_close_matches(str(name), timm.list_models(), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"search space {path}: model.backbone: {name!r} is not a timm model{hint}")


def current_value(cfg: Config, key: str) -> Any:
    """The config's value of a dotted key (auto values resolved)."""
    node: Any = cfg.model_dump(mode="json")
    for part in key.split("."):
        node = node[part]
    return node
