"""What a study leaves: the best trial as a ready experiment config, every trial as a CSV, and one offline page of
Optuna's plots (plotly.js embedded once, nothing loaded from the network)."""
from __future__ import annotations

import html
from pathlib import Path

from medal.core.config import Config, config_snapshot, derive
from medal.core.io import write_csv, write_text
from medal.core.log import get_logger
from medal.core.metrics import higher_is_better


def write_outputs(cfg: Config, study, folder: Path, best_config: Path | None = None,
                  best_name: str | None = None) -> dict:
    """trials.csv, study.html and (once a trial completed) best.yaml; logs best, baseline and gain."""
    import optuna

    log = get_logger()
    folder.mkdir(parents=True, exist_ok=True)
    trials_csv, page = folder / "trials.csv", folder / "study.html"
    write_csv(trials_csv, study.trials_dataframe())
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    summary = {"study": study.study_name, "trials": len(study.trials), "complete": len(complete),
               "trials_csv": trials_csv, "page": page, "best_config": None, "best_trial": None, "best_value": None,
               "best_params": {}, "baseline_value": None, "gain": None}
    write_text(page, study_page(cfg, study))
    if not complete:
        log.warning("tune study %r: no trial completed yet, so there is no best config; trials.csv and study.html "
                    "are in %s", study.study_name, folder)
        return summary
    best = study.best_trial
    path = Path(best_config) if best_config is not None else folder / "best.yaml"
    name = best_name or f"{cfg.name}-tuned"
    write_text(path, best_yaml(cfg, study, best, name))
    baseline = next((t for t in complete if t.user_attrs.get("baseline")), None)
    sign = 1 if higher_is_better(cfg.metric) else -1
    gain = None if baseline is None else sign * (best.value - baseline.value)
    summary.update(best_config=path, best_trial=best.number, best_value=best.value, best_params=dict(best.params),
                   baseline_value=None if baseline is None else baseline.value, gain=gain)
    versus = ("no baseline trial completed" if baseline is None else
              f"baseline (trial {baseline.number}, the config as it is) {baseline.value:.4f}, gain {gain:+.4f}")
    log.info("tune study %r: best %s %.4f (trial %d of %d, %d complete; params %s); %s; best config -> %s "
             "(`medal train -c %s`)", study.study_name, cfg.metric, best.value, best.number, len(study.trials),
             len(complete), best.params, versus, path, path)
    return summary


def best_yaml(cfg: Config, study, best, name: str) -> str:
    """The best trial's full resolved config under `name`, with no `base:` link: `medal train -c` takes it as is."""
    overrides = list(best.user_attrs.get("overrides", []))
    made = derive(cfg, [*overrides, f"name={name}"])
    folds = study.user_attrs.get("folds")
    score = f"{cfg.metric} {best.value:.4f}, the mean best score over folds {folds}"
    header = [f"# medal tune: the best trial ({best.number}) of study {study.study_name!r}: {score}.",
              f"# Searched from {cfg.source[0] or cfg.name}; the trial changed: {' '.join(overrides) or 'nothing'}.",
              f"# Its trained folds are experiment {best.user_attrs.get('experiment')}."]
    return "\n".join(header) + "\n" + config_snapshot(made)


def study_page(cfg: Config, study) -> str:
    """One self-contained HTML page: optimization history, parameter importances, intermediate values."""
    import optuna
    from plotly.offline import get_plotlyjs

    vis = optuna.visualization
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    varying = {k for t in complete for k in t.params if len({repr(u.params.get(k)) for u in complete}) > 1}
    sections = [("Optimization history", lambda: vis.plot_optimization_history(study, target_name=cfg.metric), None)]
    importance_note = None
    if len(complete) < 2 or not varying:
        importance_note = (f"Parameter importances need at least 2 complete trials and a parameter that varies "
                           f"(complete: {len(complete)}, varying: {len(varying)}).")
    sections.append(("Parameter importances", lambda: vis.plot_param_importances(study, target_name=cfg.metric),
                     importance_note))
    sections.append(("Intermediate values (per epoch; pruned trials stop early)",
                     lambda: vis.plot_intermediate_values(study), None))
    body = []
    for title, plot, note in sections:
        body.append(f"<h2>{html.escape(title)}</h2>")
        if note is None:
            try:
                body.append(plot().to_html(full_html=False, include_plotlyjs=False))
                continue
            except (ValueError, RuntimeError, ZeroDivisionError) as err:  # a plot Optuna cannot draw for this study
                note = f"Not drawn: {err}"
        body.append(f"<p>{html.escape(note)}</p>")
    title = f"medal tune: study {study.study_name} ({cfg.metric}, {len(study.trials)} trials)"
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>\n"
            f"<script type=\"text/javascript\">{get_plotlyjs()}</script></head>\n"
            f"<body><h1>{html.escape(title)}</h1>\n" + "\n".join(body) + "\n</body></html>\n")
