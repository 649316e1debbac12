"""Logs that work in a pipeline: away from a terminal every loop logs progress lines (step, img/s, loss, lr,
ETA); each stage opens with one line saying what it will do; the command line appends each stage's log to
medal.log beside its outputs; and epochs are numbered from 1 in the log and in every file alike.
"""
from __future__ import annotations

import io
import json
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import reset_medal_logging
from train_toy import make_toy, own_outputs, toy_cfg

from medal.cli import main
from medal.core import layout
from medal.core import log as medal_log
from medal.core.config import Config
from medal.core.log import LOGGER_NAME, progress, set_progress, setup_logging
from medal.modeling.models import build_model

EPOCHS = 3
# 60 toy images in 2 folds: fold 0 trains on 30 in 3 batches of 10 and validates on 30.
TOY = [f"train.epochs={EPOCHS}", "report.progress_steps=1", "runtime.cpu_threads=1", "train.ema.enabled=false"]
STEPS = 3
DATED = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} (INFO|WARNING|ERROR) ")  # medal.log
TIMED = re.compile(r"^\d{2}:\d{2}:\d{2} (INFO|WARNING|ERROR) ")  # stderr


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def medal_records(monkeypatch, caplog) -> pytest.LogCaptureFixture:
    """caplog seeing medal's INFO records, with stderr a plain (non-terminal) stream."""
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.setattr(logging.getLogger(LOGGER_NAME), "propagate", True)
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    yield caplog
    set_progress(50, 30.0)


class Clock:
    """The clock of medal.core.log, moved by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(medal_log, "perf_counter", fake)
    return fake


# progress(): tqdm in a terminal, log lines elsewhere


def test_away_from_a_terminal_progress_logs_every_n_steps_and_at_the_last(medal_records, clock):
    set_progress(3, 1e9)
    bar = progress(range(10), desc="toy epoch 1/2", images=8)
    for i in bar:
        clock.now += 0.5
        bar.set_postfix(loss=f"{1 / (i + 1):.4f}", lr=f"{1e-3 * (i + 1):.2e}")
    lines = [r.getMessage() for r in medal_records.records]
    assert [line.split(" (")[0] for line in lines] == [f"toy epoch 1/2: step {n}/10" for n in (3, 6, 9, 10)]
    # 8 images a step, a step each 0.5 s: 16 img/s; 7 steps left at 0.5 s each after step 3.
    assert lines[0] == "toy epoch 1/2: step 3/10 (30%) 16 img/s loss 0.3333 lr 3.00e-03 ETA 00:03"
    assert lines[-1] == "toy epoch 1/2: step 10/10 (100%) 16 img/s loss 0.1000 lr 1.00e-02 ETA 00:00"


def test_away_from_a_terminal_progress_logs_after_progress_seconds_between_steps(medal_records, clock):
    set_progress(1000, 30.0)
    bar = progress(range(100), desc="slow")
    logged = []
    for i in bar:
        clock.now += 7.0  # a line after every 5th step (35 s), as no step count is reached
        logged.append(len(medal_records.records))
    assert [n for n in range(1, 100) if logged[n] > logged[n - 1]] == list(range(5, 100, 5))
    assert medal_records.records[-1].getMessage().startswith("slow: step 100/100 (100%)")


def test_the_console_handler_is_added_even_beside_a_foreign_handler(monkeypatch):
    """pytest 9.2 hangs its capture handlers on every logger that does not propagate; medal's console line
    must still reach stderr."""
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    logging.getLogger(LOGGER_NAME).addHandler(logging.NullHandler())
    setup_logging()
    setup_logging()  # once only
    logging.getLogger(LOGGER_NAME).info("hello")
    assert stderr.getvalue().count("INFO hello") == 1


def test_a_short_validation_pass_logs_no_last_line_but_a_long_one_does(medal_records, clock):
    set_progress(3, 1e9)
    for _ in progress(range(2), desc="valid", short_is_silent=True):
        clock.now += 1.0
    assert medal_records.records == []  # the epoch's own line sums it up
    for _ in progress(range(4), desc="valid", short_is_silent=True):
        clock.now += 1.0
    assert [r.getMessage().split(" (")[0] for r in medal_records.records] == ["valid: step 3/4", "valid: step 4/4"]


def test_a_loop_reads_its_fields_only_for_the_step_that_ends_with_a_line(medal_records, clock):
    set_progress(4, 1e9)
    bar = progress(range(8), desc="x")
    due = []
    for _ in bar:
        due.append(bar.due())
    assert due == [False, False, False, True, False, False, False, True]


def test_counted_by_hand_in_images_a_step_is_an_update_and_lines_show_images_and_their_rate(medal_records, clock):
    set_progress(2, 1e9)
    bar = progress(None, total=100, desc="clean: scan", unit="img")
    for _ in range(4):
        clock.now += 2.0
        bar.update(25)
    bar.close()
    lines = [r.getMessage() for r in medal_records.records]
    assert lines == ["clean: scan: 50/100 img (50%) 12 img/s ETA 00:04",
                     "clean: scan: 100/100 img (100%) 12 img/s ETA 00:00"]
    assert all("loss" not in line and "lr" not in line for line in lines)


def test_in_a_terminal_progress_is_a_tqdm_bar_and_logs_nothing(monkeypatch, caplog):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setattr(logging.getLogger(LOGGER_NAME), "propagate", True)
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    set_progress(1, 1e9)
    try:
        bar = progress(range(5), desc="bar here", images=4)
        for _ in bar:
            assert not bar.due()
            bar.set_postfix(loss="0.5")
    finally:
        set_progress(50, 30.0)
    assert not caplog.records
    assert "bar here" in terminal.getvalue() and "loss=0.5" in terminal.getvalue()


# A toy fold trained through the command line, stderr not a terminal


@dataclass
class Run:
    cfg: Config
    argv: list[str]
    stderr: str
    log: str             # medal.log after the run
    file_handlers: list  # FileHandlers left on the logger after main() returned


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return make_toy(tmp_path_factory.mktemp("toy"))


def run_cli(argv: list[str]) -> tuple[int, str, list]:
    stderr = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "stderr", stderr)
        try:
            code = main(argv)
            left = [h for h in logging.getLogger(LOGGER_NAME).handlers if isinstance(h, logging.FileHandler)]
        finally:
            reset_medal_logging()
            set_progress(50, 30.0)
    assert code == 0, stderr.getvalue()
    return code, stderr.getvalue(), left


@pytest.fixture(scope="module")
def trained(toy, tmp_path_factory) -> Run:
    dest = tmp_path_factory.mktemp("logs") / "out"
    argv = ["train", "-c", str(toy), "--fold", "0", own_outputs(toy, dest), *TOY]
    _, stderr, left = run_cli(argv)
    cfg = toy_cfg(toy, f"output_dir={dest}", *TOY)
    return Run(cfg, argv, stderr, layout.log_file(cfg.exp_dir).read_text(), left)


def messages(text: str, prefix: re.Pattern = TIMED) -> list[str]:
    """The log messages of stderr (TIMED) or of medal.log (DATED), without their time and level."""
    return [prefix.sub("", line) for line in text.splitlines() if prefix.match(line)]


def train_lines(run: Run) -> list[str]:
    return [m for m in messages(run.stderr) if re.match(rf"toy fold 0 epoch \d/{EPOCHS}: step", m)]


def test_training_logs_a_progress_line_per_step_with_images_per_second_loss_lr_and_eta(trained):
    lines = train_lines(trained)
    assert [line.split(":")[1].split(" (")[0] for line in lines] == [f" step {s}/{STEPS}" for s in (1, 2, 3)] * EPOCHS
    assert [line.split(":")[0] for line in lines] == [f"toy fold 0 epoch {e}/{EPOCHS}" for e in (1, 2, 3) for _ in
                                                      range(STEPS)]
    for line in lines:
        assert re.search(r"\) \d+(\.\d+)? img/s loss \d\.\d{4} acc [\d.]+ lr \d\.\d\de-\d\d ETA \d\d:\d\d$", line), line


def test_each_progress_line_shows_the_loss_and_lr_of_its_own_step(trained):
    """The loss is the epoch's running mean up to the step, the LR the step's (as steps.csv records them), not
    the values of an earlier step: the loop refreshes its fields for every step that ends with a line."""
    steps = pd.read_csv(trained.cfg.fold_dir(0) / "steps.csv")
    for line, (_, row) in zip(train_lines(trained), steps.iterrows()):
        epoch = steps[steps["epoch"] == row["epoch"]]
        running = epoch.loc[epoch["step"] <= row["step"], "loss"].mean()
        assert float(re.search(r" loss (\S+)", line).group(1)) == pytest.approx(running, abs=1.5e-4), line
        assert re.search(r" lr (\S+)", line).group(1) == f"{row['lr']:.2e}", line


def test_validation_lines_have_no_lr(trained):
    valid = [m for m in messages(trained.stderr) if " valid: step" in m]
    assert len(valid) == EPOCHS * STEPS
    assert all("img/s" in m and " lr " not in m and "loss" not in m for m in valid)


def test_train_start_line_names_device_precision_model_parameters_images_folds_and_output(trained):
    start = next(m for m in messages(trained.stderr) if m.startswith("toy: train on"))
    params = sum(p.numel() for p in build_model(trained.cfg.model, 3).parameters())
    assert start.startswith("toy: train on cpu (float32, amp off): test_resnet (")
    assert f"({params:,} parameters, 3 classes)" in start
    assert "60 images (train/valid fold 0: 30/30)" in start
    assert "to train: folds [0]; complete, skipped: none" in start
    assert f"16px, {EPOCHS} epochs, batch 10 -> {trained.cfg.exp_dir}" in start


def test_medal_log_holds_every_line_of_stderr_with_the_date(trained):
    file_lines = trained.log.splitlines()
    assert all(DATED.match(line) for line in file_lines)
    assert messages(trained.log, DATED) == messages(trained.stderr)
    assert any(re.match(rf"toy fold 0 epoch {EPOCHS}/{EPOCHS} \(16px\): train_loss", m) for m in messages(trained.log, DATED))


def test_the_command_line_removes_its_log_file_handler_when_the_stage_ends(trained):
    assert trained.file_handlers == []


def test_a_second_run_appends_to_medal_log(trained):
    run_cli(trained.argv)  # fold 0 is complete: skipped, with a start line that says so
    text = layout.log_file(trained.cfg.exp_dir).read_text()
    assert text.startswith(trained.log) and len(text) > len(trained.log)
    starts = [m for m in messages(text, DATED) if m.startswith("toy: train on cpu")]
    assert len(starts) == 2 and "to train: folds none; complete, skipped: [0]" in starts[1]


# Epochs from 1, in the log and in every file


def test_metrics_and_steps_number_epochs_from_1(trained):
    folder = trained.cfg.fold_dir(0)
    assert pd.read_csv(folder / "metrics.csv")["epoch"].tolist() == [1, 2, 3]
    assert pd.read_csv(folder / "steps.csv")["epoch"].tolist() == [e for e in (1, 2, 3) for _ in range(STEPS)]


def test_best_epoch_in_every_file_is_the_one_the_log_names(trained):
    folder = trained.cfg.fold_dir(0)
    last_line = next(m for m in messages(trained.stderr) if m.startswith(f"toy fold 0 epoch {EPOCHS}/{EPOCHS} (16px)"))
    logged = int(re.search(r"\(best [\d.]+ @(\d+)\)", last_line).group(1))
    metrics = pd.read_csv(folder / "metrics.csv")
    assert json.loads((folder / "done.json").read_text())["best_epoch"] == logged
    assert torch.load(folder / "best.pt", weights_only=True)["epoch"] == logged
    assert metrics.loc[metrics["accuracy"].idxmax(), "epoch"] == logged  # the first epoch reaching the best
    last = torch.load(folder / "last.pt", weights_only=True)
    assert (last["epoch"], last["best_epoch"]) == (EPOCHS, logged)
    assert [row["epoch"] for row in last["history"]] == [1, 2, 3]


def test_lr_find_opens_with_its_line_and_logs_its_steps_into_the_experiment_folder(toy, tmp_path):
    run_cli(["lr-find", "-c", str(toy), own_outputs(toy, tmp_path), "lr_find.steps=5", "report.progress_steps=1",
             "runtime.cpu_threads=1"])
    found = log_messages(layout.log_file(toy_cfg(toy, f"output_dir={tmp_path}").exp_dir))
    assert found[0].startswith("toy: lr-find on fold 0's 30 training images, on cpu (float32): test_resnet at 16px, "
                               "batch 10; LR from 1e-07 to 1e+01 over at most 5 steps (valley rule)")
    steps = [m for m in found if m.startswith("lr-find: step ")]
    assert len(steps) >= 3 and steps[0].startswith("lr-find: step 1/5 (20%) ")
    assert all(re.search(r"\) \d+(\.\d+)? img/s loss \S+ lr \S+ ETA \d\d:\d\d$", m) for m in steps), steps


@pytest.mark.slow
def test_recipe_check_opens_with_its_line_and_logs_every_candidate_into_the_experiment_folder(toy, tmp_path):
    run_cli(["recipe-check", "-c", str(toy), own_outputs(toy, tmp_path), "--lr-factors", "3", "train.epochs=1",
             "runtime.cpu_threads=1"])
    found = log_messages(layout.log_file(toy_cfg(toy, f"output_dir={tmp_path}").exp_dir))
    assert found[0].startswith("toy: recipe-check on fold 0 of 3 recipes (current, plain, lr*3), each trained as "
                               "experiment toy-check-<recipe> for 1 epochs")
    assert [m.split(":")[0] for m in found if ": train on cpu" in m] == [f"toy-check-{r}" for r in ("current", "plain",
                                                                                                   "lrx3")]


# Every stage of the session pipeline (all through `medal.cli.main`) opens with its line, in its medal.log


def log_messages(path: Path) -> list[str]:
    assert path.is_file(), path
    return messages(path.read_text(), DATED)


def test_clean_and_folds_log_into_the_competition_folder(pipeline):
    found = log_messages(layout.log_file(pipeline.data_dir))
    clean = [m for m in found if m.startswith(f"{pipeline.root.name}: clean ")]
    folds = [m for m in found if m.startswith(f"{pipeline.root.name}: folds: split ")]
    assert len(clean) == 1 and "rows of train.csv" in clean[0] and "worker processes" in clean[0]
    assert clean[0].endswith(f"-> {pipeline.data_dir}")
    assert len(folds) == 1 and "into 2 folds, strategy stratified" in folds[0]
    assert not any(m.startswith("tiny_resnet: train on") for m in found)


def test_train_and_infer_log_into_the_experiment_folder(pipeline):
    cfg = pipeline.cfg()
    found = log_messages(layout.log_file(cfg.exp_dir))
    assert [m for m in found if m.startswith("tiny_resnet: train on cpu")]
    infer = [m for m in found if m.startswith("tiny_resnet: infer on cpu")]
    assert len(infer) == 1
    assert "TTA candidate views identity+hflip+vflip" in infer[0] and "with 2 fold models" in infer[0]
    assert not any(m.startswith("tiny_effnet:") for m in found)


def test_blend_logs_into_its_blend_folder(pipeline):
    cfg = pipeline.cfg()
    found = log_messages(layout.log_file(layout.blend_dir(cfg, "e2e")))
    blend = [m for m in found if ": blend 2 experiment(s)" in m]
    assert len(blend) == 1 and "method mean" in blend[0] and str(pipeline.submission) in blend[0]
