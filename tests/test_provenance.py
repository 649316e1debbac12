"""Every output is bound to what made it: a stale, mixed or leaky set of files is refused, before any work,
with a message that names what changed and the command that brings things up to date.

Each test takes a private copy of the session pipeline's outputs (demo -> clean -> folds -> train x2 ->
infer x2 -> blend), breaks it the way a user or a kill would, and runs the next stage through the CLI.
"""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from medal.cli import main
from medal.core import layout, provenance
from medal.core.locks import LockedError, exclusive
from medal.infer import run_infer
from medal.train import run_train


def cli(capsys, *argv: str) -> tuple[int, str]:
    """Run `medal argv...`; (exit code, what it printed on stderr)."""
    capsys.readouterr()
    code = main(list(argv))
    return code, capsys.readouterr().err


@pytest.fixture
def copy(pipeline, tmp_path):
    """A private copy of the session outputs and a config runner pointing at it."""
    out = pipeline.copy_outputs(tmp_path / "outputs")
    subs = tmp_path / "submissions"

    class Copy:
        output_dir = out

        @staticmethod
        def args(name: str = "tiny_resnet", *overrides: str) -> list[str]:
            return ["-c", str(pipeline.configs[name]), f"output_dir={out}", f"blend.submission_dir={subs}", *overrides]

        @staticmethod
        def cfg(name: str = "tiny_resnet", *overrides: str):
            return pipeline.cfg(name, f"output_dir={out}", f"blend.submission_dir={subs}", *overrides)

    return Copy


def test_the_pipeline_leaves_a_manifest_that_verifies_for_every_stage(pipeline):
    cfg = pipeline.cfg()
    for path in [layout.clean_manifest(cfg), layout.folds_manifest(cfg), layout.fold_manifest(cfg, 0),
                 layout.train_manifest(cfg), layout.infer_manifest(cfg), layout.blend_manifest(cfg, "e2e")]:
        record = provenance.verify(path, f"{path} is missing", cfg)
        assert record["outputs"], path


def test_retrain_then_blend_without_infer_is_refused(copy, capsys):
    cfg = copy.cfg()
    shutil.rmtree(cfg.fold_dir(0))
    assert cli(capsys, "train", *copy.args(), "--fold", "0")[0] == 0
    code, err = cli(capsys, "blend", *copy.args())
    assert code == 2
    assert "fold0/best.pt changed since infer ran for 'tiny_resnet': run `medal infer -c " in err
    assert not (copy.output_dir.parent / "submissions" / "e2e.csv").exists()


def test_infer_killed_between_its_writes_leaves_files_blend_refuses(copy, capsys, monkeypatch):
    import medal.infer.run as infer_run

    cfg = copy.cfg("tiny_resnet", "infer.tta=[identity]")
    old_test = layout.test_pred_csv(cfg).read_bytes()
    real_write_csv = infer_run.write_csv

    def killed_after_first(path, frame):
        real_write_csv(path, frame)
        raise KeyboardInterrupt("killed")  # the process dies right after oof_tta.csv is replaced

    monkeypatch.setattr(infer_run, "write_csv", killed_after_first)
    with pytest.raises(KeyboardInterrupt):
        run_infer(cfg)
    monkeypatch.undo()
    assert layout.test_pred_csv(cfg).read_bytes() == old_test  # the old file, beside a new oof_tta.csv
    code, err = cli(capsys, "blend", *copy.args())
    assert code == 2 and "the predictions of 'tiny_resnet' have no manifest" in err and "run `medal infer`" in err


def test_a_prediction_file_that_is_not_the_one_infer_wrote_is_refused(copy, capsys):
    cfg = copy.cfg()
    path = layout.test_pred_csv(cfg)
    frame = pd.read_csv(path)
    frame.iloc[0, 1] = 0.5
    frame.to_csv(path, index=False)
    code, err = cli(capsys, "blend", *copy.args())
    assert code == 2 and f"{path} is not the file written when infer ran for 'tiny_resnet'" in err


def test_folds_changed_after_training_are_refused_by_train_infer_and_blend(copy, capsys):
    assert cli(capsys, "folds", *copy.args("tiny_resnet", "folds.seed=7"))[0] == 0
    code, err = cli(capsys, "train", *copy.args())
    assert code == 2
    assert "fold 0: folds.csv changed since fold 0 of 'tiny_resnet' was trained\n" in err
    assert "--force` (their checkpoints are deleted first)" in err
    code, err = cli(capsys, "infer", *copy.args())
    assert code == 2 and "folds.csv changed since fold 0 of 'tiny_resnet' was trained: run `medal train -c" in err
    code, err = cli(capsys, "blend", *copy.args())
    assert code == 2 and "folds.csv changed since" in err and "then `medal infer -c" in err


def test_a_new_recipe_on_a_finished_experiment_is_refused_and_config_yaml_kept(copy, capsys):
    cfg = copy.cfg()
    config_yaml = (cfg.exp_dir / "config.yaml").read_bytes()
    done = layout.fold_done(cfg, 0).read_bytes()
    code, err = cli(capsys, "train", *copy.args("tiny_resnet", "train.lr=1e-3", "train.epochs=8"))
    assert code == 2
    assert "fold 0: it was trained with train.epochs 6 -> 8, train.lr 0.003 -> 0.001 (trained -> this config)" in err
    assert "train.lr=1e-3 train.epochs=8 --force`" in err and "name=NEW_NAME" in err
    assert (cfg.exp_dir / "config.yaml").read_bytes() == config_yaml
    assert layout.fold_done(cfg, 0).read_bytes() == done
    code, err = cli(capsys, "infer", *copy.args("tiny_resnet", "model.backbone=resnet10t"))
    assert code == 2 and "fold 0 of 'tiny_resnet' was trained with model.backbone 'test_resnet' -> 'resnet10t'" in err


def test_force_retrains_a_fold_under_the_new_recipe_and_infer_then_runs(copy, capsys):
    new = ("train.epochs=2",)
    assert cli(capsys, "train", *copy.args("tiny_resnet", *new), "--force")[0] == 0
    cfg = copy.cfg("tiny_resnet", *new)
    assert len(pd.read_csv(cfg.fold_dir(0) / "metrics.csv")) == 2
    assert "epochs: 2" in (cfg.exp_dir / "config.yaml").read_text()
    assert cli(capsys, "infer", *copy.args("tiny_resnet", *new))[0] == 0
    code, err = cli(capsys, "train", *copy.args("tiny_resnet", *new))
    assert code == 0, err  # complete under this recipe: skipped, not refused


def test_clean_changed_under_folds_is_refused(copy, capsys):
    assert cli(capsys, "clean", *copy.args("tiny_resnet", "clean.policy.duplicate_copy=drop",
                                            "clean.near_threshold=12"))[0] == 0
    code, err = cli(capsys, "train", *copy.args())
    # The policy drops duplicate copies, and the looser threshold finds more: duplicates.csv is the first to differ.
    assert code == 2 and "duplicates.csv changed since folds.csv was made: run `medal folds -c" in err


def test_two_trainers_on_one_fold_the_second_refuses_and_a_dead_ones_lock_is_taken_over(copy, capsys):
    cfg = copy.cfg()
    shutil.rmtree(cfg.fold_dir(1))
    lock = layout.lock_file(cfg.fold_dir(1), "train")
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from medal.core.locks import exclusive
        with exclusive(Path({str(lock)!r}), "fold 1"):
            print("held", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, err = cli(capsys, "train", *copy.args(), "--fold", "1")
        assert code == 2 and f"fold 1 of 'tiny_resnet' is in use by process {holder.pid}" in err
        assert not layout.best_checkpoint(cfg, 1).exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert cli(capsys, "train", *copy.args(), "--fold", "1")[0] == 0
    assert layout.best_checkpoint(cfg, 1).is_file()


def test_the_fold_lock_refuses_in_process_too(tmp_path):
    with exclusive(tmp_path / ".train.lock", "fold 0"):
        with pytest.raises(LockedError, match="fold 0 is in use by process"):
            with exclusive(tmp_path / ".train.lock", "fold 0"):
                pass


def test_a_corrupt_best_pt_names_a_command_that_retrains_the_fold(copy, capsys):
    cfg = copy.cfg()
    best = layout.best_checkpoint(cfg, 0)
    best.write_bytes(best.read_bytes()[:1000])
    code, err = cli(capsys, "infer", *copy.args())
    assert code == 2
    assert f"{best} is not the file written when fold 0 of 'tiny_resnet' was trained" in err
    remedy = err.split("run `")[1].split("`")[0]
    assert remedy.startswith("medal train -c ") and remedy.endswith(" --force")
    code, err = cli(capsys, *remedy.split()[1:])
    assert code == 0, err
    assert cli(capsys, "infer", *copy.args())[0] == 0


def test_an_undecodable_test_image_stops_infer_before_any_model_runs(copy, capsys, monkeypatch, pipeline):
    import medal.infer.run as infer_run

    cfg = copy.cfg()
    victim = sorted((pipeline.root / "test").iterdir())[0]
    saved = victim.read_bytes()
    monkeypatch.setattr(infer_run, "oof_pass", lambda *a: pytest.fail("the OOF pass ran"))
    try:
        victim.write_bytes(saved[:40])
        code, err = cli(capsys, "infer", *copy.args())
    finally:
        victim.write_bytes(saved)
    assert code == 2 and "1 of " in err and "test image(s) cannot be decoded" in err and victim.name in err
    assert provenance.read_manifest(layout.infer_manifest(cfg)) is not None  # the old outputs stay vouched for


def test_a_test_id_outside_the_test_folder_stops_infer(copy, capsys, pipeline, tmp_path):
    sample = pipeline.root / "sample_submission.csv"
    saved = sample.read_bytes()
    frame = pd.read_csv(sample, dtype=str)
    frame.loc[len(frame)] = ["../train/" + frame.iloc[0, 0], *frame.iloc[0, 1:]]
    try:
        frame.to_csv(sample, index=False)
        code, err = cli(capsys, "infer", *copy.args())
    finally:
        sample.write_bytes(saved)
    assert code == 2 and "id(s) whose file resolves outside the test folder" in err and "../train/" in err


def test_a_changed_sample_submission_is_refused_by_blend(copy, capsys, pipeline):
    sample = pipeline.root / "sample_submission.csv"
    saved = sample.read_bytes()
    try:
        pd.read_csv(sample, dtype=str).iloc[:-1].to_csv(sample, index=False)
        code, err = cli(capsys, "blend", *copy.args())
    finally:
        sample.write_bytes(saved)
    assert code == 2 and "sample_submission.csv changed since infer ran" in err


def test_a_manifest_records_hashes_settings_and_the_command(pipeline):
    cfg = pipeline.cfg()
    record = json.loads(layout.fold_manifest(cfg, 0).read_text())
    assert record["settings"]["train"]["lr"] == 0.003 and "runtime" not in record["settings"]
    assert record["inputs"]["folds.csv"]["path"] == "../../folds.csv"
    assert record["inputs"]["folds.csv"]["sha256"] == provenance.sha256(layout.folds_csv(cfg))
    assert record["command"].startswith("medal train -c ") and record["command"].endswith("--force")


def test_run_train_refuses_before_touching_a_stale_fold(copy):
    cfg = copy.cfg("tiny_resnet", "train.lr=1e-3")
    before = {p.name: p.stat().st_mtime_ns for p in cfg.fold_dir(0).iterdir()}
    with pytest.raises(provenance.StaleError):
        run_train(cfg)
    assert {p.name: p.stat().st_mtime_ns for p in cfg.fold_dir(0).iterdir()} == before


def test_a_key_added_since_a_fold_was_trained_counts_at_its_default_and_only_there(copy, capsys):
    # As a fold trained by an earlier medal records it: its recipe has no model.pretrained key.
    cfg = copy.cfg()
    for fold in range(2):
        path = layout.fold_manifest(cfg, fold)
        record = json.loads(path.read_text())
        del record["settings"]["model"]["pretrained"]
        path.write_text(json.dumps(record))
    assert cli(capsys, "train", *copy.args())[0] == 0  # complete: the default keeps the old behaviour
    assert cli(capsys, "infer", *copy.args())[0] == 0
    code, err = cli(capsys, "train", *copy.args("tiny_resnet", "model.pretrained=true"))
    assert code == 2 and "fold 0: it was trained with model.pretrained False -> True" in err
