"""`medal tune`: an Optuna study over config keys; every trial is trained by the train stage as an experiment.

Trial n of study S trains `<name>-tune-<S>-t<nnnn>` (trial numbers are unique within a study, across workers)
under the competition's output folder, on the chosen folds, without --force: a fold already trained under the
trial's recipe is reused, one trained under another recipe (a study deleted and restarted under the same name)
is refused, never overwritten. The objective is the mean of the folds' best scores; each epoch's validation
score (of the weights best.pt follows) is reported to the pruner. A pruned fold keeps its last.pt and no
manifest: the same recipe resumes it, any other is refused. Trial 0 is the config as it is (the baseline).
The study lives in Optuna's storage: SQLite at <data_dir>/tune_<S>/study.db unless --storage names another
database, which many workers on many machines may share.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from medal.core import provenance
from medal.core.config import Config, ConfigError, derive
from medal.core.freshness import require_current_folds
from medal.core.locks import exclusive
from medal.core.log import get_logger
from medal.core.metrics import higher_is_better
from medal.core.tables import fold_count, read_folds
from medal.modeling.checkpoint import recipe
from medal.tune.space import Param, check_space, current_value, load_space, override

PRUNERS = ("median", "halving", "none")
INSTALL = "pip install optuna plotly"


@dataclass(frozen=True)
class TuneOptions:
    """What `medal tune` was asked: the space file, the study's total of finished trials, the folds, ..."""
    space: Path
    trials: int = 20
    folds: tuple[int, ...] = (0,)
    pruner: str = "median"
    startup_trials: int = 3
    warmup_epochs: int = 1
    study: str | None = None
    storage: str | None = None
    baseline: bool = True
    best_config: Path | None = None
    best_name: str | None = None
    seed: int | None = None


class TrialFailed(RuntimeError):
    """A trial's training raised after an earlier trial completed: the trial is marked failed, the study goes on."""


def optuna_module():
    """optuna (with plotly, which draws study.html), or an ImportError that says how to install them."""
    try:
        import optuna
        import plotly  # noqa: F401  checked up front: a study should not end without its page
    except ImportError as err:
        raise ImportError(f"medal tune needs Optuna and plotly ({err.name or err} is missing): `{INSTALL}`") from err
    return optuna


def study_name(cfg: Config, name: str | None) -> str:
    study = name or cfg.name
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", study) or study in {".", ".."}:
        raise ConfigError(f"--study {study!r}: a study name is a plain folder name (letters, digits, _ . -)")
    return study


def tune_dir(cfg: Config, study: str) -> Path:
    """The study's folder: its SQLite database (by default), best.yaml, trials.csv, study.html, medal.log."""
    return cfg.data_dir / f"tune_{study}"


def trial_name(cfg: Config, study: str, number: int) -> str:
    return f"{cfg.name}-tune-{study}-t{number:04d}"


def storage_for(optuna, url: str | None, folder: Path):
    """Optuna's RDB storage: SQLite in the study's folder by default. SQLite waits up to 60 s for a lock, so
    several local workers can share one file."""
    if url is None:
        folder.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{(folder / 'study.db').resolve()}"
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def make_pruner(optuna, kind: str, startup_trials: int, warmup_steps: int):
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=warmup_steps)
    if kind == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if kind == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"--pruner {kind!r} is not one of {list(PRUNERS)}")


def open_study(cfg: Config, opts: TuneOptions, study: str, pruner=None):
    """Create the study, or join it; refuse one started from another base recipe, metric or folds."""
    optuna = optuna_module()
    sampler = optuna.samplers.TPESampler(seed=opts.seed) if opts.seed is not None else None
    made = optuna.create_study(
        storage=storage_for(optuna, opts.storage, tune_dir(cfg, study)), study_name=study, load_if_exists=True,
        direction="maximize" if higher_is_better(cfg.metric) else "minimize", sampler=sampler,
        pruner=pruner if pruner is not None else make_pruner(optuna, opts.pruner, opts.startup_trials, opts.warmup_epochs))
    mine = {"metric": cfg.metric, "folds": list(opts.folds), "config": cfg.name,
            "recipe": json.loads(json.dumps(recipe(cfg)))}
    found = made.user_attrs
    if not found:
        for key, value in mine.items():
            made.set_user_attr(key, value)
        return made
    if found.get("metric") != cfg.metric or found.get("folds") != list(opts.folds):
        raise ConfigError(f"study {study!r} scores {found.get('metric')} on folds {found.get('folds')}, this run "
                          f"{cfg.metric} on folds {list(opts.folds)}: their values do not compare. Use the same "
                          f"--folds, or a new study (--study NAME)")
    if found.get("recipe") != mine["recipe"]:
        raise ConfigError(f"study {study!r} was started from another base recipe "
                          f"({provenance.settings_difference(found['recipe'], mine['recipe'])}; study -> this config): "
                          "its trials would not compare with this run's. Use the config it was started from, or "
                          "a new study (--study NAME)")
    return made


def enqueue_baseline(study, cfg: Config, params: list[Param]) -> None:
    """Trial 0: the config as it is, only while the study has no trial. A key whose value Optuna does not take
    (a choice outside the list) keeps the config's value without being recorded as a param."""
    if study.get_trials(deepcopy=False):
        return
    fixed = {}
    for param in params:
        value = current_value(cfg, param.key)
        if param.accepts(value):
            fixed[param.key] = value
        else:
            get_logger().info("tune baseline: %s=%r is not among the space's choices %s; the baseline keeps it, "
                              "unrecorded as a param", param.key, value, list(param.choices))
    study.enqueue_trial(fixed, user_attrs={"baseline": True}, skip_if_exists=True)


def trial_config(cfg: Config, params: list[Param], trial, study: str) -> tuple[Config, list[str]]:
    """The trial's config (and the overrides that make it from `cfg`): the suggested values, renamed, and
    tagged with the study and trial for W&B."""
    baseline = bool(trial.user_attrs.get("baseline"))
    overrides = []
    for param in params:
        if baseline and not param.accepts(current_value(cfg, param.key)):
            continue  # the config's own value, which Optuna would refuse as a param
        overrides.append(override(param.key, param.suggest(trial)))
    tags = [*cfg.tracking.tags, f"tune:{study}", f"trial:{trial.number}"]
    name = trial_name(cfg, study, trial.number)
    made = derive(cfg, [*overrides, f"name={name}"])
    made.tracking.tags = tags  # set, not overridden: the commands messages name stay the trial's recipe
    trial.set_user_attr("experiment", name)
    trial.set_user_attr("overrides", overrides)
    return made, overrides


def epoch_reporter(trial, cfg: Config, folds: tuple[int, ...]):
    """on_epoch for run_train: report each epoch's score of the weights best.pt follows (row['chosen']: the EMA's,
    else the raw weights') at step fold_index * total_epochs + epoch - 1; raise TrialPruned when the pruner says."""
    optuna = optuna_module()
    metric, total = cfg.metric, cfg.train.total_epochs

    def report(fold: int, row: dict) -> None:
        value = row[f"ema_{metric}"] if row.get("chosen") == "ema" else row[metric]
        step = folds.index(fold) * total + int(row["epoch"]) - 1
        trial.report(float(value), step)
        if trial.should_prune():
            get_logger().info("tune trial %d pruned after epoch %d of fold %d (%s %.4f)", trial.number, row["epoch"],
                              fold, metric, value)
            raise optuna.TrialPruned(f"pruned at step {step} ({metric} {value:.4f})")

    return report


def objective(cfg: Config, params: list[Param], opts: TuneOptions, study: str):
    """The function Optuna calls per trial: train the trial's experiment on the folds, return the mean best score."""
    optuna = optuna_module()
    from medal.train import run_train  # here: the space checks above need no torch

    def run(trial) -> float:
        made, overrides = trial_config(cfg, params, trial, study)
        get_logger().info("tune trial %d%s: %s -> experiment %s", trial.number,
                          " (baseline: the config as it is)" if trial.user_attrs.get("baseline") else "",
                          " ".join(overrides) or "as configured", made.name)
        reporter = epoch_reporter(trial, made, opts.folds)
        scores = []
        for fold in opts.folds:
            try:
                scores.extend(run_train(made, fold=fold, on_epoch=reporter).values())
            except optuna.TrialPruned:
                raise
            except provenance.StaleError as err:
                raise provenance.StaleError(
                    f"tune trial {trial.number}: its folder {made.exp_dir} holds a fold trained under another "
                    f"recipe or other folds, which tune never overwrites (was the study deleted or restarted under "
                    f"the same name?). Use a new study name (--study NAME), or delete {made.exp_dir} yourself."
                    f"\n{err}") from None
            except ConfigError:
                raise
            except Exception as err:
                if not _any_finished(trial.study):
                    raise  # no trial has worked yet: most likely the setup's error, not this recipe's
                raise TrialFailed(f"trial {trial.number} ({made.name}) failed: {type(err).__name__}: {err}") from err
        return sum(scores) / len(scores)

    return run


def _any_finished(study) -> bool:
    optuna = optuna_module()
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return bool(study.get_trials(deepcopy=False, states=done))


def run_tune(cfg: Config, opts: TuneOptions, pruner=None) -> dict:
    """Run trials until the study holds opts.trials finished ones (complete or pruned, from every worker), then
    write best.yaml, trials.csv and study.html; returns the summary (best, baseline, gain, paths). `pruner`
    replaces the one opts names (an Optuna pruner object, from Python)."""
    optuna = optuna_module()
    params = load_space(opts.space)
    check_space(cfg, params, opts.space)
    if not opts.folds or len(set(opts.folds)) != len(opts.folds):
        raise ConfigError(f"--folds {list(opts.folds)}: give one or more different folds, e.g. 0 or 0,1,2")
    if opts.trials < 1:
        raise ConfigError(f"--trials {opts.trials}: the study needs at least one trial")
    require_current_folds(cfg)
    n_folds = fold_count(read_folds(cfg))
    if not all(0 <= k < n_folds for k in opts.folds):
        raise ConfigError(f"--folds {','.join(map(str, opts.folds))}: folds.csv has folds 0..{n_folds - 1}")
    study = study_name(cfg, opts.study)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # medal logs the study and each trial itself
    try:
        handle = open_study(cfg, opts, study, pruner)
        if opts.baseline:
            enqueue_baseline(handle, cfg, params)
        _optimize(cfg, opts, params, study, handle)
    finally:
        optuna.logging.set_verbosity(verbosity)
    from medal.tune.outputs import write_outputs

    folder = tune_dir(cfg, study)
    with exclusive(folder / ".tune.lock", f"the outputs of study {study!r}", wait=True):  # workers may end together
        return write_outputs(cfg, handle, folder, opts.best_config, opts.best_name)


def _optimize(cfg: Config, opts: TuneOptions, params: list[Param], study: str, handle) -> None:
    """This worker's trials: as many as the study still lacks, stopping early once other workers filled it."""
    optuna = optuna_module()
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    done = len(handle.get_trials(deepcopy=False, states=finished))
    todo = max(0, opts.trials - done)
    get_logger().info(
        "%s: tune study %r (%s, %s) over %s; objective: %s on fold(s) %s; %d trial(s) to run here (%d finished of "
        "%d wanted); trials train as %s-tune-%s-t<nnnn>; results -> %s", cfg.name, study, opts.storage or "SQLite",
        "maximize" if higher_is_better(cfg.metric) else "minimize", "; ".join(p.describe() for p in params),
        cfg.metric, list(opts.folds), todo, done, opts.trials, cfg.name, study, tune_dir(cfg, study))
    enough = optuna.study.MaxTrialsCallback(opts.trials, states=finished)
    handle.optimize(objective(cfg, params, opts, study), n_trials=todo, catch=(TrialFailed,),
                    callbacks=[enough, _log_trial(cfg)])


def _log_trial(cfg: Config):
    def log(study, trial) -> None:
        value = "" if trial.value is None else f" {cfg.metric} {trial.value:.4f}"
        try:
            best = f"; best so far trial {study.best_trial.number} ({study.best_value:.4f})"
        except ValueError:
            best = ""
        get_logger().info("tune trial %d %s%s%s", trial.number, trial.state.name.lower(), value, best)
    return log
