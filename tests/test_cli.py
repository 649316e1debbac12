"""The command line: config errors stop a stage before any work with exit 2 and a one-line message; help texts."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_yaml

from medal.cli import main

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture
def config(tmp_path) -> Path:
    root = tmp_path / "comp"
    root.mkdir()
    return write_yaml(tmp_path / "exp.yaml", {"name": "exp", "output_dir": str(tmp_path / "outputs"),
                                              "data": {"root": str(root)}})


@pytest.mark.parametrize("stage", ["clean", "folds", "train", "infer", "blend"])
def test_unknown_key_exits_2_naming_the_key_before_any_output(stage, config, tmp_path, capsys):
    code = main([stage, "-c", str(config), "train.lrr=1e-3"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"medal {stage}: error:" in err and "train.lrr" in err and "did you mean 'lr'" in err
    assert "Traceback" not in err
    assert not (tmp_path / "outputs").exists()


def test_wrong_type_exits_2_naming_the_key_without_traceback(config, tmp_path, capsys):
    code = main(["train", "-c", str(config), "train.epochs=abc"])
    err = capsys.readouterr().err
    assert code == 2 and "train.epochs" in err and "Traceback" not in err
    assert not (tmp_path / "outputs").exists()


def test_missing_data_folder_exits_2_naming_the_folder(tmp_path, capsys):
    config = write_yaml(tmp_path / "exp.yaml", {"name": "exp", "output_dir": str(tmp_path / "outputs"),
                                                "data": {"root": str(tmp_path / "absent")}})
    code = main(["clean", "-c", str(config)])
    err = capsys.readouterr().err
    assert code == 2 and str(tmp_path / "absent") in err and "Traceback" not in err
    assert not (tmp_path / "outputs").exists()


def test_missing_config_file_exits_2_naming_it(tmp_path, capsys):
    code = main(["folds", "-c", str(tmp_path / "nope.yaml")])
    err = capsys.readouterr().err
    assert code == 2 and "nope.yaml" in err and "Traceback" not in err


def test_argument_that_is_not_key_value_exits_2_naming_it(config, tmp_path, capsys):
    code = main(["train", "-c", str(config), "train.lr"])
    err = capsys.readouterr().err
    assert code == 2 and "['train.lr']" in err and "key=value" in err
    assert not (tmp_path / "outputs").exists()


def test_a_stage_whose_input_is_missing_exits_2_naming_the_stage_to_run(config, capsys):
    code = main(["folds", "-c", str(config)])
    err = capsys.readouterr().err
    assert code == 2 and "clean.csv does not exist" in err and "medal clean" in err


def test_debug_flag_shows_the_error_as_an_exception(config):
    from medal.core.config import ConfigError

    with pytest.raises(ConfigError, match="train.lrr"):
        main(["--debug", "train", "-c", str(config), "train.lrr=1"])


def test_top_level_help_exits_0_and_lists_the_stages(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    for stage in ["clean", "folds", "train", "infer", "blend", "check-submission", "score", "demo"]:
        assert stage in out


def test_train_help_exits_0_and_lists_fold_option_and_its_config_keys(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    assert "--fold" in out
    for key in ["train.lr", "train.epochs", "model.backbone", "data.root", "name", "seed"]:
        assert f"  {key} (" in out


def test_stage_help_lists_only_the_sections_it_reads(capsys):
    with pytest.raises(SystemExit):
        main(["folds", "--help"])
    out = capsys.readouterr().out
    assert "  folds.n_folds (" in out
    assert "  train.lr (" not in out


@pytest.mark.slow
def test_python_dash_m_medal_help_runs_the_cli():
    env = {**os.environ, "PYTHONPATH": str(SRC), "NO_ALBUMENTATIONS_UPDATE": "1"}
    result = subprocess.run([sys.executable, "-m", "medal", "train", "--help"], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--fold" in result.stdout and "train.lr" in result.stdout


def test_missing_stage_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main([])
    assert exit_.value.code == 2
    assert "STAGE" in capsys.readouterr().err
