"""The peer a fastai user gets for free: fastai's own recipe, with its defaults.

ImageDataLoaders.from_df with item_tfms=Resize(size) and batch_tfms=aug_transforms() plus ImageNet Normalize,
vision_learner on the timm backbone named by --backbone (a string arch goes through fastai's timm support)
with pretrained=False and fastai's head, loss (CrossEntropyLossFlat) and optimiser (Adam); the learning rate
is the valley suggestion of lr_find, then fit_one_cycle. It trains on the rows of folds.csv outside --fold and
validates on that fold (the split medal used, as timm_loop.py does), then predicts the test images of
sample_submission.csv, writes the submission, and only then reads solution.csv to score it. Prints one JSON
line: valid and test accuracy, the lr_find valley, wall seconds. Runs on the CPU.

fastai is not a dependency of medal: it lives in benchmarks/.fastai, installed by
benchmarks/peers/install_fastai.sh, and only this script puts that folder on sys.path.

    bash benchmarks/peers/install_fastai.sh
    python3 benchmarks/peers/fastai_recipe.py --data ../shared/data/flowers --folds FOLDS.csv --out DIR
"""
import argparse
import contextlib
import json
import sys
import time
import warnings
from pathlib import Path

import pandas as pd

FASTAI = Path(__file__).resolve().parent.parent / ".fastai"
sys.path.insert(0, str(FASTAI))
try:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
        from fastai.vision.all import (
            ImageDataLoaders,
            Normalize,
            Resize,
            accuracy,
            aug_transforms,
            default_device,
            imagenet_stats,
            set_seed,
            vision_learner,
        )
except ImportError as e:
    sys.exit(f"fastai_recipe.py: cannot import fastai from {FASTAI} ({e}); "
             f"install it there first with: bash benchmarks/peers/install_fastai.sh")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--folds", type=Path, required=True, help="medal's folds.csv: image_id, label, fold")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--backbone", default="resnet18", help="a timm model name")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--seed", type=int, default=42)
    a = p.parse_args()
    started = time.perf_counter()
    default_device(False)  # the CPU, whatever else the machine has
    set_seed(a.seed)
    folds = pd.read_csv(a.folds, dtype={"image_id": str, "label": str})
    rows = folds.assign(path="train/" + folds["image_id"], is_valid=folds["fold"] == a.fold)
    dls = ImageDataLoaders.from_df(rows, path=a.data, fn_col="path", label_col="label", valid_col="is_valid",
                                   item_tfms=Resize(a.size),
                                   batch_tfms=[*aug_transforms(), Normalize.from_stats(*imagenet_stats)],
                                   bs=a.batch, num_workers=a.workers)
    a.out.mkdir(parents=True, exist_ok=True)
    # path=a.out: lr_find saves its temporary weights under path/models, and the data folder may be read-only
    learn = vision_learner(dls, a.backbone, pretrained=False, metrics=accuracy, path=a.out)

    def log(values):  # one line an epoch, from fastai's recorder, instead of its progress-bar table
        epoch, *rest = values
        cells = [f"{n} {v:.4f}" if isinstance(v, float) else f"{n} {v}"
                 for n, v in zip(learn.recorder.metric_names[1:], rest)]
        print(f"epoch {epoch + 1}: " + ", ".join(cells), flush=True)

    learn.logger = log
    with contextlib.nullcontext() if sys.stdout.isatty() else learn.no_bar():
        lr = float(learn.lr_find(show_plot=False).valley)
        print(f"lr_find valley: {lr:.3g}", flush=True)
        learn.fit_one_cycle(a.epochs, lr)
        valid = float(learn.validate()[1])
        sample = pd.read_csv(a.data / "sample_submission.csv", dtype=str)
        test_dl = dls.test_dl(sample.assign(path="test/" + sample["image_id"]))
        probs, _ = learn.get_preds(dl=test_dl)
    with contextlib.suppress(OSError):
        (a.out / "models").rmdir()  # lr_find's folder, empty again once it has cleaned up
    submission = sample.assign(label=[dls.vocab[k] for k in probs.argmax(1).tolist()])
    submission.to_csv(a.out / "submission.csv", index=False)
    truth = pd.read_csv(a.data / "solution.csv", dtype=str).set_index("image_id")["label"]
    test_acc = (submission.set_index("image_id")["label"] == truth.loc[submission["image_id"]]).mean()
    print(json.dumps({"recipe": "fastai", "valid": valid, "test": float(test_acc), "lr": lr,
                      "seconds": round(time.perf_counter() - started, 1)}))


if __name__ == "__main__":
    main()
