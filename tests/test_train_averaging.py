"""Weight averaging through the real loop: SWA over the last epochs and the top-k epochs' average are the mean
of the weights they were fed, their BatchNorm statistics are recomputed on the training images, the config
chooses which weights write the OOF, and a killed run resumes its running average."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from train_toy import make_toy, make_trainer, one_compute_thread, state_copy, toy_cfg  # noqa: F401 (fixture)

from medal.core import layout
from medal.core.config import ConfigError
from medal.images.augment import eval_transform
from medal.images.dataset import ImageDataset
from medal.modeling.checkpoint import load_best, load_last
from medal.train import run_train

AVERAGED = ("train.epochs=3", "train.batch_size=16", "train.ema.enabled=false")


@pytest.fixture
def toy(tmp_path):
    return make_toy(tmp_path, per_class=8, n_folds=2)  # 12 training images per fold: one batch of 16


def _spy_epochs(trainer) -> list[dict]:
    """Copies of the weights after each epoch's validation, as the averages were fed them."""
    fed: list[dict] = []
    feed = trainer.averages.after_epoch

    def record(epoch, raw, chosen, score):
        fed.append({"epoch": epoch, "raw": state_copy(raw), "chosen": state_copy(chosen), "score": score})
        feed(epoch, raw, chosen, score)

    trainer.averages.after_epoch = record
    return fed


def _first_bn_input(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The input of the model's first BatchNorm layer for `images`: it depends on no BatchNorm statistics."""
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen = []
    handle = bn.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    model.eval()
    with torch.no_grad():
        model(images)
    handle.remove()
    return seen[0]


def _train_images(trainer) -> torch.Tensor:
    data = trainer.data
    plain = ImageDataset(data.train_paths, data.train_targets, eval_transform(trainer.t.image_size, trainer.stats))
    return torch.stack([plain[i][0] for i in range(len(plain))])


def _float_params(state: dict) -> dict:
    return {k: v for k, v in state.items() if v.is_floating_point() and "running_" not in k}


def test_swa_weights_are_the_mean_of_the_last_epochs_and_their_batchnorm_is_recomputed(toy):
    cfg = toy_cfg(toy, *AVERAGED, "train.average.swa_epochs=2", "train.average.oof=swa")
    trainer = make_trainer(cfg)
    fed = _spy_epochs(trainer)
    trainer.fit()
    saved = load_best(layout.best_checkpoint(cfg, 0), "cpu")
    assert saved["weights"] == "swa"
    # Epochs 2 and 3 are the window of the last 2 of 3 epochs: best.pt holds the mean of their raw weights.
    sources = [f["raw"] for f in fed if f["epoch"] in (2, 3)]
    assert [f["epoch"] for f in fed] == [1, 2, 3]
    for key, value in _float_params(saved["model"]).items():
        expected = (sources[0][key] + sources[1][key]) / 2
        assert torch.allclose(value, expected, atol=1e-6), key
    # Not the last epoch's weights: the average moved them (else this test could not tell the two apart).
    assert not torch.allclose(saved["model"]["fc.weight"], sources[1]["fc.weight"])
    # BatchNorm recomputed: the first BN layer's running mean and variance are those of its inputs over the
    # training images (one batch, momentum None: the batch's own mean and unbiased variance).
    model = trainer.model
    model.load_state_dict(saved["model"])
    inputs = _first_bn_input(model, _train_images(trainer))
    bn_key = next(k for k in saved["model"] if k.endswith("running_mean"))
    assert torch.allclose(saved["model"][bn_key], inputs.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(saved["model"][bn_key.replace("mean", "var")], inputs.var(dim=(0, 2, 3), unbiased=True),
                          rtol=1e-4, atol=1e-6)
    mean_of_sources = (sources[0][bn_key] + sources[1][bn_key]) / 2
    assert not torch.allclose(saved["model"][bn_key], mean_of_sources, atol=1e-4)


def test_top_k_weights_are_the_mean_of_the_k_best_epochs_chosen_weights(toy):
    # log_loss: scores without ties (accuracy on 12 images ties often), lower is better.
    cfg = toy_cfg(toy, "metric=log_loss", "train.epochs=4", "train.batch_size=16", "train.average.top_k=2",
                  "train.average.oof=top_k", "train.ema.decay=0.5", "train.ema.oof=either")
    trainer = make_trainer(cfg)
    fed = _spy_epochs(trainer)
    trainer.fit()
    assert len({f["score"] for f in fed}) == 4
    # The two best epochs by validation log loss, each with the weights it chose (raw or EMA).
    ranked = sorted(fed, key=lambda f: f["score"])[:2]
    saved = load_best(layout.best_checkpoint(cfg, 0), "cpu")
    assert saved["weights"] == "top_k"
    assert trainer.averages.describe()["top_k_epochs"] == sorted(f["epoch"] for f in ranked)
    for key, value in _float_params(saved["model"]).items():
        assert torch.allclose(value, (ranked[0]["chosen"][key] + ranked[1]["chosen"][key]) / 2, atol=1e-6), key
    # Only the k snapshots on disk while training; gone once the fold's files are written (train_fold does that).
    assert sorted(p.name for p in (cfg.fold_dir(0) / "top_k").iterdir()) == sorted(f"epoch{f['epoch']}.pt" for f in ranked)


@pytest.mark.slow  # over 2 s on a quiet 2-core machine
def test_the_config_chooses_the_oof_weights_and_cv_json_compares_them(toy):
    cfg = toy_cfg(toy, *AVERAGED, "train.average.swa_epochs=2", "train.average.top_k=2")
    run_train(cfg)
    oof = pd.read_csv(layout.oof_csv(cfg))
    for fold in (0, 1):
        done = json.loads(layout.fold_done(cfg, fold).read_text())
        assert set(done["weights_scores"]) == {"best", "swa", "top_k"}
        assert done["weights"] == "raw"  # average.oof=best: the best epoch's weights write the OOF
        fold_oof = pd.read_csv(layout.fold_oof(cfg, fold))
        best = pd.read_csv(layout.fold_weights_oof(cfg, fold, "best"))
        swa = pd.read_csv(layout.fold_weights_oof(cfg, fold, "swa"))
        classes = [c for c in fold_oof.columns if c not in ("image_id", "fold", "target")]
        assert np.allclose(fold_oof[classes], best[classes], atol=1e-6)  # oof.csv is the best epoch's
        assert not np.allclose(fold_oof[classes], swa[classes], atol=1e-4)
        assert not (cfg.fold_dir(fold) / "top_k").exists()
    cv = json.loads(layout.cv_json(cfg).read_text())
    assert set(cv["weights_cv"]) == {"best", "swa", "top_k"}
    assert cv["weights_cv"]["best"] == pytest.approx(cv["cv"])
    # Each score is the accuracy of its own OOF file, gathered over both folds.
    swa = pd.concat([pd.read_csv(layout.fold_weights_oof(cfg, k, "swa")) for k in (0, 1)])
    classes = [c for c in swa.columns if c not in ("image_id", "fold", "target")]
    accuracy = (swa[classes].to_numpy().argmax(1) == swa["target"].to_numpy()).mean()
    assert cv["weights_cv"]["swa"] == pytest.approx(accuracy)
    assert len(oof) == 24
    # The experiment's report shows the comparison, with cv.json's numbers.
    from medal.report.experiment import experiment_document

    page = experiment_document(cfg).markdown()
    assert "Weight averaging: each set of weights on the OOF" in page
    for name, value in cv["weights_cv"].items():
        assert f"| {name} | {value:.4f} |" in page


def test_a_killed_run_resumes_its_swa_average(toy, tmp_path):
    cfg = toy_cfg(toy, *AVERAGED, "train.average.swa_epochs=3", "train.average.oof=swa")
    whole = make_trainer(cfg)
    fed = _spy_epochs(whole)
    whole.fit()
    expected = load_best(layout.best_checkpoint(cfg, 0), "cpu")["model"]
    # The same fold again, stopped after epoch 2 (last.pt holds the running average of epochs 1-2), then resumed.
    again = toy_cfg(toy, *AVERAGED, "train.average.swa_epochs=3", "train.average.oof=swa", f"output_dir={tmp_path / 'again'}")
    (tmp_path / "again" / "toy").mkdir(parents=True)
    for name in ("folds.csv", "folds.manifest.json"):
        (tmp_path / "again" / "toy" / name).write_bytes((toy.parent / "outputs" / "toy" / name).read_bytes())
    first = make_trainer(again)
    first.on_epoch = lambda row: (_ for _ in ()).throw(KeyboardInterrupt) if row["epoch"] == 2 else None
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    assert load_last(layout.last_checkpoint(again, 0), "cpu")["averages"]["swa_epochs"] == [1, 2]
    resumed = make_trainer(again)
    resumed.fit()
    assert resumed.averages.describe()["swa_epochs"] == [1, 2, 3]
    got = load_best(layout.best_checkpoint(again, 0), "cpu")["model"]
    assert [f["epoch"] for f in fed] == [1, 2, 3]
    for key, value in _float_params(expected).items():
        assert torch.allclose(got[key], value, atol=1e-5), key


def test_an_oof_choice_of_an_average_that_is_off_is_refused(toy):
    with pytest.raises(ConfigError, match="swa_epochs"):
        toy_cfg(toy, "train.average.oof=swa")


@pytest.mark.parametrize(("metric", "scores", "kept"), [
    ("accuracy", [0.5, 0.9, 0.7, 0.8], [2, 4]),   # higher is better: 0.9 (epoch 2) and 0.8 (epoch 4)
    ("log_loss", [0.5, 0.9, 0.7, 0.3], [1, 4]),   # lower is better: 0.3 (epoch 4) and 0.5 (epoch 1)
    ("accuracy", [0.6, 0.6, 0.6, 0.7], [1, 4]),   # a tie does not displace the earlier epoch
])
def test_top_k_keeps_the_k_best_scores_and_averages_exactly_those(tmp_path, metric, scores, kept):
    from medal.core.config import AverageConfig
    from medal.train.averaging import WeightAverages

    averages = WeightAverages(AverageConfig(top_k=2), total_epochs=4, metric=metric, folder=tmp_path)
    weights = {}
    for epoch, value in enumerate(scores, start=1):
        model = torch.nn.Linear(2, 1)
        torch.nn.init.constant_(model.weight, float(epoch))  # epoch e's weights are all e
        weights[epoch] = model
        averages.after_epoch(epoch, model, model, value)
    assert averages.describe()["top_k_epochs"] == kept
    assert sorted(p.name for p in (tmp_path / "top_k").iterdir()) == [f"epoch{e}.pt" for e in kept]
    loader = [(torch.zeros(1, 2), torch.zeros(1))]
    average = averages.averaged(torch.nn.Linear(2, 1), loader, torch.device("cpu"))["top_k"]
    assert torch.allclose(average.weight, torch.full((1, 2), sum(kept) / 2))
