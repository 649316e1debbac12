"""Accuracy at one CPU budget: medal against the peers a competitor would otherwise use, on one dataset.

Every row trains resnet18 from scratch at 64 px for 8 epochs, batch 64 (the blend's other two members are
other models at the same budget), on medal's folds of the dataset (fold 0 is the one split), and is scored on
solution.csv only after its submission file is written. The rows:
  1 medal plain, one split      no augmentation, constant LR, no label smoothing, no EMA (fold 0's model)
  2 medal default, one split    medal's defaults (fold 0's model; the CV estimate is fold 0's score)
  3 medal 5-fold + TTA          the default recipe on 5 folds, TTA views chosen on OOF, `medal blend` of it alone
  4 medal blend of 3            row 3's model + resnet10t + resnet10t with the photo preset (seed 7), blended by
                                `medal blend` (method picked by nested CV; the CV estimate is the nested one)
  5 fastai                      vision_learner(resnet18, pretrained=False), lr_find's valley, fit_one_cycle(8),
                                aug_transforms (benchmarks/peers/fastai_recipe.py; fastai lives in benchmarks/.fastai)
  6 timm loop                   the hand-written loop of issue 12 (benchmarks/peers/timm_loop.py)
Rows 1 and 2 predict the test set with fold 0's best.pt alone and no TTA, like the peers.

Jobs (each fold, each peer, each infer) run as separate processes, --parallel at a time, each on one torch
thread, medal and peers interleaved, so every row pays the same machine. A row's seconds are the sum of its
jobs' wall times (one thread each); for rows 3 and 4 they include infer and blend.

    python3 benchmarks/accuracy.py --dataset flowers [--data-root ../shared/data] [--out DIR] [--parallel 2]

Prints a Markdown table and writes DIR/accuracy_<dataset>.json (a list of rows) and .md. A second run with the
same --out reuses finished work: medal skips trained folds, and a peer's result is kept in DIR/peers.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

BUDGET = {"image_size": 64, "epochs": 8, "batch_size": 64}
# The blend's members: the default recipe and two others with different errors at the same budget.
# The other two are resnet10t (about 60% of resnet18's cost), the second with other seeds and the photo preset.
MEMBERS = {"default": {}, "r10t": {"model": {"backbone": "resnet10t"}},
           "r10t_photo_s7": {"seed": 7, "model": {"backbone": "resnet10t"}, "train": {"augment": "photo"}}}


def write_configs(out: Path, data: Path, dataset: str) -> dict[str, Path]:
    base = {"output_dir": str(out / "outputs"), "metric": "accuracy",
            "data": {"root": str(data), "name": dataset, "cache_max_side": 160 if dataset == "hymenoptera" else 0},
            "model": {"backbone": "resnet18"}, "train": dict(BUDGET),
            "runtime": {"num_workers": 0, "device": "cpu", "cpu_threads": 1},
            "report": {"sample_grid": 0, "gallery_size": 0},
            "blend": {"submission_dir": str(out / "submissions")}}
    paths = {}
    (out / "configs").mkdir(parents=True, exist_ok=True)
    for name, extra in MEMBERS.items():
        config = yaml.safe_load(yaml.safe_dump(base))
        for key, value in extra.items():
            config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
        config["name"] = name
        paths[name] = out / "configs" / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(config, sort_keys=False))
    paths["plain"] = write_plain(paths["default"])
    return paths


class Jobs:
    """Runs commands as processes with one torch thread each, logs each to out/logs/<name>.log, times them."""

    def __init__(self, out: Path) -> None:
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.seconds: dict[str, float] = {}
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1",
                    "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}

    def run(self, name: str, command: list[str]) -> str:
        started = time.perf_counter()
        log = self.logs / f"{name.replace('/', '_')}.log"
        with log.open("w") as handle:
            handle.write("$ " + " ".join(command) + "\n")
            handle.flush()
            code = subprocess.call(command, stdout=handle, stderr=subprocess.STDOUT, env=self.env, cwd=REPO)
        self.seconds[name] = time.perf_counter() - started
        print(f"  {name}: {'ok' if code == 0 else f'FAILED ({code})'} in {self.seconds[name]:.0f} s", flush=True)
        if code != 0:
            raise RuntimeError(f"{name} failed; see {log}:\n" + "".join(log.read_text().splitlines(True)[-15:]))
        return log.read_text()

    def total(self, prefix: str) -> float:
        return sum(s for name, s in self.seconds.items() if name.startswith(prefix))


def medal(*args: str) -> list[str]:
    return [sys.executable, "-m", "medal", *args]


def peer(script: str, data: Path, folds: Path, out: Path) -> list[str]:
    return [sys.executable, str(HERE / "peers" / script), "--data", str(data), "--folds", str(folds), "--fold", "0",
            "--out", str(out), "--backbone", "resnet18", "--size", str(BUDGET["image_size"]),
            "--epochs", str(BUDGET["epochs"]), "--batch", str(BUDGET["batch_size"])]


def peer_result(jobs: Jobs, name: str, command: list[str], out: Path) -> dict:
    saved = out / "result.json"
    if saved.is_file():
        result = json.loads(saved.read_text())
        jobs.seconds[name] = result["seconds"]
        return result
    text = jobs.run(name, command)
    result = json.loads([line for line in text.splitlines() if line.startswith("{")][-1])
    saved.write_text(json.dumps(result))
    return result


def one_split_test_score(config: Path, data: Path) -> float:
    """Fold 0's best.pt alone, identity view: the test set's accuracy from the submission it writes."""
    import numpy as np
    import pandas as pd
    import torch

    from medal.core.config import load_config
    from medal.core.tables import class_names, read_folds
    from medal.images.augment import eval_transform
    from medal.images.dataset import ImageDataset
    from medal.modeling.checkpoint import load_best
    from medal.modeling.models import build_model, normalisation
    from medal.modeling.predict import predict_probs

    cfg = load_config(config)
    classes = class_names(read_folds(cfg)[cfg.data.label_col])
    state = load_best(cfg.fold_dir(0) / "best.pt", "cpu", classes)
    model = build_model(cfg.model, len(classes))
    model.load_state_dict(state["model"])
    sample = pd.read_csv(data / "sample_submission.csv", dtype=str)
    paths = [data / "test" / i for i in sample["image_id"]]
    loader = torch.utils.data.DataLoader(ImageDataset(paths, None, eval_transform(cfg.train.image_size, normalisation(model))),
                                         batch_size=128)
    probs, _ = predict_probs(model, loader, torch.device("cpu"), amp=False)
    submission = sample.assign(label=[classes[k] for k in np.argmax(probs, axis=1)])
    path = cfg.exp_dir / "one_split_submission.csv"
    submission.to_csv(path, index=False)
    return test_score(path, data)


def test_score(submission: Path, data: Path) -> float:
    """`medal score`'s scorer; solution.csv is read only here, after the submission file exists."""
    import pandas as pd

    from medal.core.submission import score_submission
    from medal.core.tables import class_names

    classes = class_names(pd.read_csv(data / "train.csv", dtype=str)["label"])
    return score_submission(submission, data / "solution.csv", "image_id", "label", classes, "accuracy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=None, help="work folder (default /tmp/medal_accuracy_<dataset>)")
    parser.add_argument("--parallel", type=int, default=2, help="jobs at a time, one torch thread each")
    parser.add_argument("--epochs", type=int, default=BUDGET["epochs"], help="a smaller budget for a smoke run")
    parser.add_argument("--size", type=int, default=BUDGET["image_size"], help="a smaller budget for a smoke run")
    parser.add_argument("--one-split", action="store_true",
                        help="rows 1, 2, 5 and 6 only (no 5-fold CV, no blend): a quarter of the time")
    args = parser.parse_args()
    BUDGET.update(epochs=args.epochs, image_size=args.size)
    data = (args.data_root / args.dataset).resolve()
    out = (args.out or Path(f"/tmp/medal_accuracy_{args.dataset}")).resolve()
    configs = write_configs(out, data, args.dataset)
    # The command that made this folder's figures, for BENCHMARKS.md (run_all.py --accuracy-from shows it).
    (out / "command.txt").write_text(" ".join(["python3", "benchmarks/accuracy.py", *sys.argv[1:]]) + "\n")
    jobs = Jobs(out)
    started = time.perf_counter()
    print(f"{args.dataset}: work in {out}", flush=True)
    # fastai is never medal's dependency: the peer gets its own folder, benchmarks/.fastai (idempotent).
    jobs.run("install_fastai", ["bash", str(HERE / "peers" / "install_fastai.sh")])
    jobs.run("clean", medal("clean", "-c", str(configs["default"])))
    jobs.run("folds", medal("folds", "-c", str(configs["default"])))
    folds = out / "outputs" / args.dataset / "folds.csv"

    # Longest first, peers interleaved with medal's folds, so that they share the machine alike.
    train = [("plain/fold0", medal("train", "-c", str(configs["plain"]), "--fold", "0"))]
    train += [(f"{m}/fold{k}", medal("train", "-c", str(configs[m]), "--fold", str(k))) for k in range(5) for m in MEMBERS
              if not args.one_split or (m, k) == ("default", 0)]
    peers = {"fastai": peer("fastai_recipe.py", data, folds, out / "peers" / args.dataset / "fastai"),
             "timm": peer("timm_loop.py", data, folds, out / "peers" / args.dataset / "timm")}
    for name in peers:
        (out / "peers" / args.dataset / name).mkdir(parents=True, exist_ok=True)
    order = train[1:2] + [("peer:fastai", None)] + train[:1] + [("peer:timm", None)] + train[2:]
    results: dict[str, dict] = {}

    def work(item):
        name, command = item
        if name.startswith("peer:"):
            peer_name = name.split(":")[1]
            results[peer_name] = peer_result(jobs, peer_name, peers[peer_name], out / "peers" / args.dataset / peer_name)
        else:
            jobs.run(name, command)

    with ThreadPoolExecutor(args.parallel) as pool:
        list(pool.map(work, order))
    if not args.one_split:
        with ThreadPoolExecutor(args.parallel) as pool:
            list(pool.map(lambda m: jobs.run(f"{m}/infer", medal("infer", "-c", str(configs[m]))), MEMBERS))
        jobs.run("default/blend", medal("blend", "-c", str(configs["default"]), "default", "--name", "cv_default"))
        jobs.run("blend", medal("blend", "-c", str(configs["default"]), *MEMBERS, "--name", "blend3"))

    rows = []
    for name, label in (("plain", "medal plain, one split"), ("default", "medal default, one split")):
        done = json.loads((out / "outputs" / args.dataset / name / "fold0" / "done.json").read_text())
        rows.append({"row": len(rows) + 1, "recipe": label, "cv": done["best_score"],
                     "test": one_split_test_score(configs[name], data), "seconds": jobs.seconds[f"{name}/fold0"]})
    if not args.one_split:
        rows += cv_rows(out, args.dataset, data, jobs)
    for name, label in (("fastai", f"fastai (lr_find valley {results['fastai'].get('lr', float('nan')):.2g})"),
                        ("timm", "hand-written timm loop")):
        r = results[name]
        rows.append({"row": 5 if name == "fastai" else 6, "recipe": label, "cv": r["valid"], "test": r["test"],
                     "seconds": r["seconds"]})
    for row in rows:
        row["gap"] = row["cv"] - row["test"]
        row["dataset"] = args.dataset
    report(out, args.dataset, rows, time.perf_counter() - started)


def cv_rows(out: Path, dataset: str, data: Path, jobs: Jobs) -> list[dict]:
    """Rows 3 and 4: the default recipe's 5-fold CV with OOF-chosen TTA, and the blend of the three members."""
    rows = []
    single = json.loads((out / "outputs" / dataset / "blend_cv_default" / "blend.json").read_text())
    rows.append({"row": 3, "recipe": "medal 5-fold CV + OOF-chosen TTA", "cv": single["blend_cv"],
                 "test": test_score(out / "submissions" / "cv_default.csv", data),
                 "seconds": jobs.total("default/") - jobs.seconds["default/blend"]})
    blend = json.loads((out / "outputs" / dataset / "blend_blend3" / "blend.json").read_text())
    weights = ", ".join(f"{k} {v:.2f}" for k, v in blend["weights"].items())
    rows.append({"row": 4, "recipe": f"medal blend of 3 ({blend['method']}: {weights})", "cv": blend["blend_cv"],
                 "test": test_score(out / "submissions" / "blend3.csv", data),
                 "seconds": sum(jobs.total(f"{m}/") for m in MEMBERS) + jobs.seconds["blend"] - jobs.seconds["default/blend"]})
    return rows


def write_plain(default: Path) -> Path:
    """The plain recipe exactly as `medal recipe-check` defines it (no augmentation, constant LR, no label
    smoothing, no EMA), applied to the default config, so that only the toolbox differs."""
    from medal.core.config import config_snapshot, derive, load_config
    from medal.train.recipe_check import candidates

    cfg = load_config(default)
    plain = next(c for c in candidates(cfg) if c.name == "plain")
    path = default.with_name("plain.yaml")
    path.write_text(config_snapshot(derive(cfg, [*plain.overrides, "name=plain"])))
    return path


def report(out: Path, dataset: str, rows: list[dict], wall: float) -> None:
    import resource
    lines = [(f"{dataset}: resnet18 from scratch, {BUDGET['image_size']} px, {BUDGET['epochs']} epochs, batch "
             f"{BUDGET['batch_size']}; split = medal's fold 0; test = solution.csv"),
             "| row | recipe | CV estimate | test | CV - test | seconds (1 thread) |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['row']} | {r['recipe']} | {100 * r['cv']:.1f} | {100 * r['test']:.1f} | {100 * r['gap']:+.1f} | "
              f"{r['seconds']:.0f} |" for r in rows]
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    lines.append(f"\nwall {wall / 60:.1f} min for the whole run; max RSS of the largest job {rss:.0f} MiB")
    text = "\n".join(lines)
    print(text)
    (out / f"accuracy_{dataset}.md").write_text(text + "\n")
    (out / f"accuracy_{dataset}.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
