"""One fold trained by two processes under torchrun (gloo on CPU): sharded batches and validation, gathered OOF,
rank 0 alone writing, hard-example weights the same on both ranks, and a killed run that resumes.

Each run is `python -m torch.distributed.run --nproc_per_node=2 -m medal train ...` in a subprocess. A
sitecustomize.py on the processes' PYTHONPATH records, per rank, every file written through medal.core.io's
atomic_path and every set of hard-example weights, and can crash both ranks at a given epoch: the code under
test is medal's own, unchanged.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from train_toy import make_toy

from medal.core import layout
from medal.core.config import load_config
from medal.core.metrics import score
from medal.core.tables import class_names, read_folds
from medal.images.augment import eval_transform
from medal.images.dataset import ImageDataset
from medal.modeling.checkpoint import load_best
from medal.modeling.models import build_model, normalisation
from medal.modeling.predict import predict_probs
from medal.modeling.runtime import make_loader
from medal.train.fold import split_fold

HOOKS = '''
import contextlib, os, pathlib
import numpy as np
record = pathlib.Path(os.environ["MEDAL_TEST_RECORD"])
rank = os.environ.get("RANK", "0")
import medal.core.io as io
_atomic = io.atomic_path

@contextlib.contextmanager
def atomic_path(path):
    with (record / f"writes-rank{rank}.txt").open("a") as f:
        f.write(str(path) + "\\n")
    with _atomic(path) as tmp:
        yield tmp

io.atomic_path = atomic_path
import medal.train.sampler as sampler
_weights = sampler.LossTracker.weights

def weights(self, strength, cap):
    w = _weights(self, strength, cap)
    calls = len(list(record.glob(f"weights-rank{rank}-*.npy")))
    np.save(record / f"weights-rank{rank}-{calls}.npy", w)
    return w

sampler.LossTracker.weights = weights
crash = os.environ.get("MEDAL_TEST_CRASH_AT")
if crash:
    import medal.train.trainer as trainer
    _epoch = trainer.FoldTrainer._train_epoch

    def train_epoch(self, epoch):
        if epoch == int(crash):
            raise KeyboardInterrupt("simulated kill")
        return _epoch(self, epoch)

    trainer.FoldTrainer._train_epoch = train_epoch
'''
# 9 images per class in 2 folds: fold 0 validates on an odd number of rows (15), so the shards differ in length.
OVERRIDES = ["train.epochs=3", "train.batch_size=4", "train.hard_mining.start_epoch=1", "runtime.cpu_threads=1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(config: Path, record: Path, *extra: str, crash_at: int | None = None) -> subprocess.CompletedProcess:
    hooks = record.parent / "hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / "sitecustomize.py").write_text(HOOKS)
    record.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hooks), os.environ.get("PYTHONPATH", "")]),
           "MEDAL_TEST_RECORD": str(record), "OMP_NUM_THREADS": "1"}
    env.pop("MEDAL_TEST_CRASH_AT", None)
    if crash_at is not None:
        env["MEDAL_TEST_CRASH_AT"] = str(crash_at)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
               "-m", "medal", "train", "-c", str(config), "--fold", "0", *OVERRIDES, *extra]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp")
    config = make_toy(base, per_class=9)
    done = torchrun(config, base / "record")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return load_config(config, OVERRIDES), base / "record", done


@pytest.mark.slow
def test_the_oof_holds_every_validation_id_exactly_once(ddp):
    cfg, _, _ = ddp
    table = read_folds(cfg)
    expected = sorted(table.loc[table["fold"] == 0, "image_id"])
    assert len(expected) % 2 == 1  # an odd count: one rank's shard is one image longer, and nothing is padded
    oof = pd.read_csv(layout.fold_oof(cfg, 0), dtype={"image_id": str})
    assert sorted(oof["image_id"]) == expected and oof["image_id"].is_unique


@pytest.mark.slow
def test_the_validation_metric_equals_one_process_evaluating_the_same_checkpoint(ddp):
    cfg, _, _ = ddp
    table = read_folds(cfg)
    classes = class_names(table[cfg.data.label_col])
    data = split_fold(cfg, table, classes, 0)
    model = build_model(cfg.model, len(classes))
    model.load_state_dict(load_best(layout.best_checkpoint(cfg, 0), "cpu")["model"])
    loader = make_loader(ImageDataset(data.valid_paths, data.valid_targets, eval_transform(cfg.train.image_size, normalisation(model))),
                         16, 0, torch.device("cpu"))
    probs, _ = predict_probs(model, loader, torch.device("cpu"), amp=False)
    done = json.loads(layout.fold_done(cfg, 0).read_text())
    assert score(cfg.metric, data.valid_targets, probs) == pytest.approx(done["best_score"])
    oof = pd.read_csv(layout.fold_oof(cfg, 0), dtype={"image_id": str}).set_index("image_id").loc[data.valid_ids]
    np.testing.assert_allclose(oof[classes].to_numpy(), probs, atol=1e-5)


@pytest.mark.slow
def test_only_rank_0_writes_files_and_logs(ddp):
    cfg, record, _ = ddp
    written = (record / "writes-rank0.txt").read_text().splitlines()
    assert not (record / "writes-rank1.txt").exists()
    assert any(p.endswith("best.pt") for p in written) and any(p.endswith("metrics.csv") for p in written)
    log = layout.log_file(cfg.exp_dir).read_text()
    assert log.count("toy: train on") == 1 and log.count("toy fold 0 epoch 3/3 (16px)") == 1
    assert "2 processes" in log


@pytest.mark.slow
def test_hard_example_weights_are_the_same_on_both_ranks(ddp):
    _, record, _ = ddp
    per_rank = [sorted(record.glob(f"weights-rank{r}-*.npy")) for r in (0, 1)]
    assert len(per_rank[0]) == len(per_rank[1]) == 2  # epochs 2 and 3 draw by weight (start_epoch=1)
    for a, b in zip(*per_rank):
        weights = np.load(a)
        np.testing.assert_array_equal(weights, np.load(b))
        assert weights.std() > 0  # the losses of both ranks' samples reached the tracker: not uniform


@pytest.mark.slow
def test_a_killed_run_resumes_under_ddp_and_finishes(tmp_path):
    config = make_toy(tmp_path, per_class=9)
    killed = torchrun(config, tmp_path / "record", crash_at=2)
    assert killed.returncode != 0
    cfg = load_config(config, OVERRIDES)
    assert list(pd.read_csv(cfg.fold_dir(0) / "metrics.csv")["epoch"]) == [1, 2]
    resumed = torchrun(config, tmp_path / "record")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming after epoch 2" in layout.log_file(cfg.exp_dir).read_text()
    assert list(pd.read_csv(cfg.fold_dir(0) / "metrics.csv")["epoch"]) == [1, 2, 3]
    assert json.loads(layout.fold_done(cfg, 0).read_text())["epochs_trained"] == 3


@pytest.mark.parametrize("stage", ["infer", "blend", "lr-find", "recipe-check"])
def test_stages_other_than_train_refuse_to_run_under_torchrun(stage, tmp_path, monkeypatch, capsys):
    from medal.cli import main

    config = make_toy(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main([stage, "-c", str(config)]) == 2
    assert f"`medal {stage}` runs in one process; only `medal train` runs under torchrun" in capsys.readouterr().err


def test_sync_bn_converts_on_cuda_and_is_left_out_on_cpu():
    from medal.core.config import ModelConfig
    from medal.modeling.distributed import sync_batchnorm

    model = build_model(ModelConfig(backbone="test_resnet"), 3)
    on_gpu = sync_batchnorm(model, torch.device("cuda"))  # the conversion itself needs no GPU
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in on_gpu.modules())
    model = build_model(ModelConfig(backbone="test_resnet"), 3)
    assert sync_batchnorm(model, torch.device("cpu")) is model
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
