"""The one command line: `medal STAGE -c CONFIG [key=value ...]`."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

# Set before albumentations is imported anywhere: no update check over the network.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from medal.core.config import Config, ConfigError, describe_keys, load_config
from medal.core.log import get_logger, setup_logging

# Which config sections each stage reads, for its --help.
STAGE_SECTIONS = {
    "clean": ["data", "clean"],
    "folds": ["data", "folds"],
    "train": ["data", "model", "train", "runtime", "report", "tracking"],
    "lr-find": ["data", "model", "train", "lr_find", "runtime"],
    "recipe-check": ["data", "model", "train", "runtime"],
    "tune": ["data", "model", "train", "runtime", "tracking"],
    "infer": ["data", "model", "train", "infer", "runtime"],
    "blend": ["data", "blend", "tracking"],
    "pseudo": ["data"],
    "report": ["data", "report", "blend"],
}

STAGE_HELP = {
    "clean": "decode every training image in parallel, find broken, odd and duplicate files; write clean.csv, "
             "dropped.csv (reason per row), findings.csv, duplicates.csv, a report, and the resized-image cache if asked",
    "folds": "split clean.csv into folds, keeping duplicate and group_col groups whole; write folds.csv, folds.json "
             "and folds_report.md",
    "train": "train the experiment's model on every fold (or --fold K); write checkpoints, metrics and OOF",
    "lr-find": "LR range test on fold K's training images (default 0): plot loss against LR and suggest an LR",
    "recipe-check": "train the current recipe, the plain recipe and the current one at other LRs (and any --try "
                    "recipe) on one fold, each as experiment <name>-check-<recipe>, and compare their scores: are the "
                    "defaults good on this competition? Writes <experiment>/recipe_check.csv and .md",
    "tune": "an Optuna study over config keys (--space FILE): each trial trains one fold (or --folds) as experiment "
            "<name>-tune-<study>-t<nnnn>, pruned when its epochs fall behind; trial 0 is the config as it is. "
            "Writes tune_<study>/best.yaml (a ready config), trials.csv and study.html",
    "infer": "measure TTA views on OOF, keep those that help, predict the test set with every fold model",
    "blend": "compare experiments on OOF, blend them, write and check submissions/<name>.csv",
    "pseudo": "take a blend's confident test predictions (--threshold T, or --top-fraction F per class) as "
              "pseudo_<name>/pseudo.csv, hard or --soft labels; train adds them to the training side of every fold "
              "with train.pseudo_labels=PATH",
    "report": "write one self-contained HTML page (images embedded, nothing loaded from the network) about the "
              "experiment: config, curves, LR, CV, TTA, confusion matrix, per-class precision and recall, hardest "
              "OOF images; with --blend NAME about blend_<NAME> instead",
}


def _keys_epilog(sections: list[str]) -> str:
    top = [line for line in describe_keys() if line.strip().split(" ")[0].count(".") == 0]
    lines = ["config keys (set in the YAML file or as key=value):", *top]
    lines += [line for line in describe_keys() if line.strip().split(".")[0] in sections]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medal", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="medal: a Kaggle image-classification pipeline.\n"
                    "Stages: clean -> folds -> train -> infer -> blend. Each reads the files the one before wrote.",
        epilog="Run `medal STAGE --help` for a stage's options and config keys.")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    stages = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for stage, sections in STAGE_SECTIONS.items():
        sub = stages.add_parser(stage, help=STAGE_HELP[stage], description=STAGE_HELP[stage],
                                epilog=_keys_epilog(sections), formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.add_argument("-c", "--config", required=True, type=Path, help="experiment YAML file (may inherit via `base:`)")
        if stage == "train":
            sub.add_argument("--fold", type=int, default=None, help="train only fold K (default: every fold)")
            sub.add_argument("--force", action="store_true",
                             help="retrain the folds that are stale: trained (or started) under another recipe, on "
                                  "another folds.csv, or with a damaged checkpoint; their files are deleted first. "
                                  "Without it train refuses them; folds that match are skipped either way")
        if stage == "lr-find":
            sub.add_argument("--fold", type=int, default=0, help="sweep on fold K's training images (default 0)")
        if stage == "recipe-check":
            sub.add_argument("--fold", type=int, default=0, help="the one split to train on (default fold 0)")
            sub.add_argument("--lr-factors", type=lambda text: tuple(float(x) for x in text.split(",") if x),
                             default=(1 / 3, 3.0), metavar="F,F", help="LR grid around the current LR (default 0.3333,3)")
            sub.add_argument("--try", dest="tries", action="append", default=[], metavar="NAME:key=value,...",
                             help="another recipe to compare, e.g. flips:train.augment=flips (repeatable)")
        if stage == "tune":
            _tune_options(sub)
        if stage == "infer":
            sub.add_argument("--test-only", action="store_true",
                             help="predict the test set only, with the views and fold models a full infer chose "
                                  "(tta.json); oof_tta.csv is kept as it is (a Kaggle kernel)")
        if stage == "report":
            sub.add_argument("--blend", nargs="?", const="", default=None, metavar="NAME",
                             help="report on the blend NAME (blend_<NAME>/; default blend.submission_name) instead "
                                  "of the config's experiment")
            sub.add_argument("--out", type=Path, default=None,
                             help="where to write the page (default <experiment>/report.html or blend_<NAME>/report.html)")
        if stage == "pseudo":
            _pseudo_options(sub)
        if stage == "blend":
            sub.add_argument("--name", default=None, help="submission name (default: blend.submission_name)")
            sub.add_argument("--compare", action="store_true",
                             help="score every blend method by nested CV and use the best (blend.method=compare)")
            sub.add_argument("args", nargs="*", metavar="EXP|key=value",
                             help="experiments to blend (default: blend.experiments), and config overrides")
        else:
            sub.add_argument("args", nargs="*", metavar="key=value", help="config overrides, e.g. train.lr=3e-4")
    check = stages.add_parser("check-submission", help="check a submission file against sample_submission.csv")
    check.add_argument("file", type=Path, help="the submission CSV")
    check.add_argument("-c", "--config", required=True, type=Path, help="config naming the competition data")
    check.add_argument("args", nargs="*", metavar="key=value", help="config overrides")
    scorer = stages.add_parser("score", help="score a submission against a held-back solution file")
    scorer.add_argument("file", type=Path, help="the submission CSV")
    scorer.add_argument("--solution", type=Path, required=True, help="CSV with the true labels (id, label)")
    scorer.add_argument("-c", "--config", required=True, type=Path, help="config naming the competition data and metric")
    scorer.add_argument("args", nargs="*", metavar="key=value", help="config overrides")
    _kaggle_parser(stages)
    _weights_parser(stages)
    demo = stages.add_parser("demo", help="build the embedded demo competition (no download needed)")
    demo.add_argument("--out", type=Path, default=Path("input/demo"), help="where to write it (default input/demo)")
    demo.add_argument("--size", type=int, default=32, help="image side in pixels (default 32)")
    demo.add_argument("--per-class", type=int, default=None, help="images per class (default: all 1,797 digits)")
    return parser


def _pseudo_options(sub) -> None:
    sub.add_argument("--from", dest="source", required=True, metavar="BLEND",
                     help="the blend whose test predictions to take (blend_<BLEND>/test_probs.csv; `medal blend --name`)")
    rule = sub.add_mutually_exclusive_group(required=True)
    rule.add_argument("--threshold", type=float, metavar="T",
                      help="keep the test rows whose top-class probability is at least T, 0 < T <= 1")
    rule.add_argument("--top-fraction", type=float, metavar="F",
                      help="keep, per predicted class, its most confident F of rows (rounded up), 0 < F <= 1")
    sub.add_argument("--soft", action="store_true",
                     help="also write one probability column per class: training learns the blend's distribution "
                          "(label smoothing and mixup apply to it) instead of the predicted class")
    sub.add_argument("--name", default=None, help="the table's name: pseudo_<NAME>/ (default: the blend's name)")


def _tune_options(sub) -> None:
    sub.add_argument("--space", type=Path, required=True, metavar="SPACE.yaml",
                     help="the search space: one dotted config key per line, e.g. `train.lr: {float: [1.0e-4, 1.0e-2], "
                          "log: true}` or `train.augment: {categorical: [light, flips]}` (configs/demo/space.yaml)")
    sub.add_argument("--trials", type=int, default=20,
                     help="finished trials (complete or pruned) the study should hold, counting every worker's and "
                          "earlier runs'; this run adds what is missing (default 20)")
    sub.add_argument("--folds", type=lambda text: tuple(int(x) for x in text.split(",") if x), default=(0,),
                     metavar="K[,K...]", help="the objective: the fold's best score, or the mean over these folds (default 0)")
    sub.add_argument("--pruner", choices=["median", "halving", "none"], default="median",
                     help="stop a trial whose epochs fall behind: median (Optuna's MedianPruner), halving "
                          "(SuccessiveHalvingPruner) or none (default median)")
    sub.add_argument("--startup-trials", type=int, default=3, metavar="N",
                     help="median pruner: prune nothing until N trials have finished (default 3)")
    sub.add_argument("--warmup-epochs", type=int, default=1, metavar="E",
                     help="median pruner: never prune a trial in its first E epochs (default 1)")
    sub.add_argument("--study", default=None, metavar="NAME", help="the study's name (default: the config's name)")
    sub.add_argument("--storage", default=None, metavar="URL",
                     help="an Optuna database URL shared by several workers, e.g. postgresql://user:pw@host/db "
                          "(default: SQLite at <output_dir>/<competition>/tune_<study>/study.db)")
    sub.add_argument("--no-baseline", dest="baseline", action="store_false",
                     help="do not enqueue the config as it is as the study's first trial")
    sub.add_argument("--best-config", type=Path, default=None, metavar="PATH",
                     help="where to write the best trial's config (default tune_<study>/best.yaml)")
    sub.add_argument("--best-name", default=None, metavar="NAME",
                     help="the experiment name in that config (default <name>-tuned)")
    sub.add_argument("--seed", type=int, default=None, help="seed of Optuna's sampler (default: random per worker)")


def _kaggle_parser(stages) -> None:
    kaggle = stages.add_parser("kaggle", help="pack experiments and an offline kernel for a Kaggle code competition",
                               description="pack: write a dataset folder (medal's wheel, the wheels a Kaggle image "
                                           "lacks, the experiments' best checkpoints, configs and chosen TTA views) "
                                           "and a kernel folder that predicts the test set and writes submission.csv")
    kaggle.add_argument("action", choices=["pack"])
    kaggle.add_argument("-c", "--config", required=True, type=Path, action="append",
                        help="an experiment to pack (repeat for each; infer must have run for it)")
    kaggle.add_argument("--out", type=Path, default=Path("kaggle"), help="where to write dataset/ and kernel/ (default kaggle)")
    kaggle.add_argument("--user", default=os.environ.get("KAGGLE_USERNAME", "USERNAME"),
                        help="Kaggle user owning the dataset and kernel (default $KAGGLE_USERNAME)")
    kaggle.add_argument("--competition", default=None, help="competition slug (default: data.name of the config)")
    kaggle.add_argument("--dataset", default=None, help="dataset slug (default medal-<competition>)")
    kaggle.add_argument("--kernel", default=None, help="kernel slug (default medal-<competition>-kernel)")
    kaggle.add_argument("--no-download", action="store_true",
                        help="do not download the wheels a Kaggle image lacks (offline; the kernel must find them elsewhere)")
    kaggle.add_argument("args", nargs="*", metavar="key=value", help="config overrides, applied to every config")


def _weights_parser(stages) -> None:
    weights = stages.add_parser("weights", help="pretrained backbone weights for a machine without internet")
    actions = weights.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = actions.add_parser(
        "export", help="write timm's pretrained weights of BACKBONE as DIR/model.safetensors and DIR/config.json",
        description="Write timm's pretrained weights of BACKBONE (from the Hugging Face cache, else the hub) as "
                    "DIR/model.safetensors with its timm config DIR/config.json. Upload DIR as a Kaggle dataset and "
                    "set model.pretrained_file=/kaggle/input/<dataset>/model.safetensors: no internet needed.")
    export.add_argument("backbone", metavar="BACKBONE", help="timm model name, with a tag if wanted (convnext_tiny.fb_in22k)")
    export.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder to write model.safetensors and config.json into")


def _split_args(stage: str, args: list[str]) -> tuple[list[str], list[str]]:
    """Separate key=value overrides from blend's experiment names; other stages take overrides only."""
    overrides = [a for a in args if "=" in a]
    names = [a for a in args if "=" not in a]
    if names and stage != "blend":
        raise ConfigError(f"unexpected argument(s) {names}: overrides look like key=value, e.g. train.epochs=3")
    return overrides, names


def run(ns: argparse.Namespace) -> int:
    log = get_logger()
    if ns.stage == "demo":
        from medal.demo import build_demo

        counts = build_demo(ns.out, size=ns.size, per_class=ns.per_class)
        log.info("demo competition in %s: %d train rows (%d planted broken files), %d test images",
                 ns.out, counts["train"], counts["planted"], counts["test"])
        return 0
    if ns.stage == "weights":
        from medal.modeling.weights import export_weights

        weights, config = export_weights(ns.backbone, ns.out)
        log.info("%s: timm's pretrained weights written to %s (config %s); for a kernel without internet set "
                 "model.pretrained_file to that file in a Kaggle dataset", ns.backbone, weights, config)
        return 0
    overrides, names = _split_args(ns.stage, ns.args)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and ns.stage != "train":
        # Every process would do the whole stage and write the same files: only training is split over ranks.
        raise ConfigError(f"`medal {ns.stage}` runs in one process; only `medal train` runs under torchrun "
                          f"(WORLD_SIZE={os.environ['WORLD_SIZE']}). Run it without torchrun")
    if ns.stage == "kaggle":
        return _kaggle([load_config(path, overrides) for path in ns.config], ns)
    cfg = load_config(ns.config, overrides)
    from medal.core import layout
    from medal.core.log import log_to_file

    # Each stage's log is also appended to medal.log beside its outputs; check-submission and score keep none.
    blend = getattr(ns, "name", None) if ns.stage == "blend" else getattr(ns, "blend", None)  # None: not a blend's
    blend_folder = layout.blend_dir(cfg, blend or cfg.blend.submission_name)
    tune_folder = None
    if ns.stage == "tune":  # tune's log goes beside its study
        from medal.tune.study import study_name, tune_dir
        tune_folder = tune_dir(cfg, study_name(cfg, ns.study))
    folder = {"clean": cfg.data_dir, "folds": cfg.data_dir, "blend": blend_folder, "tune": tune_folder,
              "pseudo": layout.pseudo_dir(cfg, ns.name or ns.source) if ns.stage == "pseudo" else None,
              "report": cfg.exp_dir if blend is None else blend_folder,
              **dict.fromkeys(["train", "infer", "lr-find", "recipe-check"], cfg.exp_dir)}.get(ns.stage)
    if os.environ.get("RANK", "0") != "0":  # under torchrun rank 0 alone logs (and keeps medal.log); others warn
        folder = None
        get_logger().setLevel(logging.WARNING)
    with log_to_file(layout.log_file(folder) if folder is not None else None) as path:
        try:
            return STAGES[ns.stage](cfg, ns, names)
        except Exception as err:
            if path is not None and path.is_file():  # the file holds the run's log, so it should hold how it ended
                with path.open("a", encoding="utf-8") as file:
                    file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} ERROR medal {ns.stage} failed: "
                               f"{type(err).__name__}: {err}\n")
            raise


def _clean(cfg: Config, ns, names) -> int:
    from medal.clean import run_clean
    run_clean(cfg)
    return 0


def _folds(cfg: Config, ns, names) -> int:
    from medal.folds import run_folds
    run_folds(cfg)
    return 0


def _train(cfg: Config, ns, names) -> int:
    from medal.train import run_train
    run_train(cfg, ns.fold, ns.force)
    return 0


def _lr_find(cfg: Config, ns, names) -> int:
    from medal.train import run_lr_find
    report = run_lr_find(cfg, ns.fold)
    print(f"suggested lr {report['suggested_lr']:.3g} ({report['rule']} rule); plot {report['plot']}")
    return 0


def _recipe_check(cfg: Config, ns, names) -> int:
    from medal.core.report import markdown_table
    from medal.train import run_recipe_check
    table = run_recipe_check(cfg, ns.fold, ns.lr_factors, ns.tries)
    print(f"recipe-check of {cfg.name}, fold {ns.fold}, {cfg.metric}:")
    print(markdown_table(table.drop(columns=["experiment"]), index=False))
    return 0


def _tune(cfg: Config, ns, names) -> int:
    from medal.tune import TuneOptions, run_tune
    from medal.tune.study import optuna_module
    try:
        optuna_module()
    except ImportError as err:  # a message for people, not a traceback
        print(f"medal tune: error: {err}", file=sys.stderr)
        return 2
    opts = TuneOptions(space=ns.space, trials=ns.trials, folds=ns.folds, pruner=ns.pruner,
                       startup_trials=ns.startup_trials, warmup_epochs=ns.warmup_epochs, study=ns.study,
                       storage=ns.storage, baseline=ns.baseline, best_config=ns.best_config, best_name=ns.best_name,
                       seed=ns.seed)
    summary = run_tune(cfg, opts)
    if summary["best_config"] is not None:
        print(f"best {cfg.metric} {summary['best_value']:.4f} (trial {summary['best_trial']}): {summary['best_config']}")
    return 0


def _infer(cfg: Config, ns, names) -> int:
    from medal.infer import run_infer
    run_infer(cfg, test_only=ns.test_only)
    return 0


def _kaggle(cfgs: list[Config], ns) -> int:
    from medal.kaggle import pack
    packed = pack(cfgs, ns.out, user=ns.user, competition=ns.competition, dataset=ns.dataset, kernel=ns.kernel,
                  download=not ns.no_download)
    print(f"dataset {packed.dataset}\nkernel {packed.kernel}")
    return 0


def _blend(cfg: Config, ns, names) -> int:
    from medal.blend import run_blend
    if ns.compare:
        cfg.blend.method = "compare"
    report = run_blend(cfg, names or None, ns.name)
    print(report["submission"])
    return 0


def _pseudo(cfg: Config, ns, names) -> int:
    from medal.core import layout
    from medal.pseudo import run_pseudo
    summary = run_pseudo(cfg, ns.source, threshold=ns.threshold, top_fraction=ns.top_fraction, soft=ns.soft,
                         name=ns.name)
    print(layout.pseudo_csv(cfg, summary["name"]))
    return 0


def _report(cfg: Config, ns, names) -> int:
    from medal.report.blend import write_blend_report
    from medal.report.experiment import write_experiment_report
    if ns.blend is None:
        page = write_experiment_report(cfg, ns.out)
    else:
        page = write_blend_report(cfg, ns.blend or cfg.blend.submission_name, ns.out)
    print(page)
    return 0


def _check(cfg: Config, ns, names) -> int:
    from medal.core.submission import check_submission
    from medal.core.tables import class_names, read_folds
    d = cfg.data
    check_submission(ns.file, d.root / d.sample_submission, d.id_col, d.label_col, class_names(read_folds(cfg)[d.label_col]),
                     metric=cfg.metric)
    get_logger().info("%s passes the submission check", ns.file)
    return 0


def _score(cfg: Config, ns, names) -> int:
    from medal.core.submission import score_submission
    from medal.core.tables import class_names, read_folds
    d = cfg.data
    value = score_submission(ns.file, ns.solution, d.id_col, d.label_col, class_names(read_folds(cfg)[d.label_col]), cfg.metric)
    print(f"{ns.file}: {cfg.metric} {value:.4f} on {ns.solution}")
    return 0


STAGES = {"clean": _clean, "folds": _folds, "train": _train, "lr-find": _lr_find, "recipe-check": _recipe_check,
          "tune": _tune,
          "infer": _infer, "blend": _blend, "pseudo": _pseudo, "report": _report,
          "check-submission": _check, "score": _score}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """parse_args, except that key=value overrides (and blend's experiment names) may follow an option:
    argparse fills a positional list from one run of arguments only, so in `check-submission FILE -c CFG
    k=v` the k=v would otherwise be refused."""
    parser = build_parser()
    ns, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or not hasattr(ns, "args") or ("=" not in a and ns.stage != "blend")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        ns.args = [*ns.args, *extra]
    return ns


def main(argv: list[str] | None = None) -> int:
    ns = _parse(argv)
    setup_logging(logging.INFO)
    try:
        return run(ns)
    except (ConfigError, FileNotFoundError, ValueError, OSError) as err:
        if ns.debug:
            raise
        print(f"medal {ns.stage}: error: {err}", file=sys.stderr)
        return 2
