"""The whole pipeline through `medal.cli.main`: demo -> clean -> folds -> train x2 -> infer x2 -> blend -> check -> score.

The session fixture `pipeline` (conftest.py) runs every stage once; these tests
read what it returned and wrote.
"""
from __future__ import annotations

import re

import pandas as pd
from conftest import EXPERIMENTS

from medal.cli import main


def test_every_stage_exits_0(pipeline):
    expected = ["demo", "clean", "folds", *[f"{s}:{n}" for n in EXPERIMENTS for s in ("train", "infer")],
                "blend", *[f"report:{n}" for n in EXPERIMENTS], "report:blend", "check-submission", "score"]
    assert sorted(pipeline.codes) == sorted(expected)
    assert {stage: code for stage, code in pipeline.codes.items() if code != 0} == {}


def test_the_final_submission_exists_with_one_row_per_test_image(pipeline):
    sub = pd.read_csv(pipeline.submission, dtype=str)
    assert len(sub) == len(list((pipeline.root / "test").glob("*.png"))) == len(pd.read_csv(pipeline.root / "solution.csv"))


def test_the_final_submission_scores_well_above_chance_on_the_held_back_solution(pipeline):
    match = re.search(r": accuracy (\d\.\d{4}) on .*solution\.csv", pipeline.stdout["score"])
    assert match, pipeline.stdout["score"]
    # Ten classes: chance is 0.1. The tiny models reach about 0.7-0.9 here; a pipeline that
    # shuffles ids, labels or class columns anywhere lands near 0.1.
    assert float(match.group(1)) > 0.5


def test_check_submission_command_rejects_a_broken_submission(pipeline, tmp_path, capsys):
    broken = pd.read_csv(pipeline.submission, dtype=str).iloc[::-1]
    path = tmp_path / "reversed.csv"
    broken.to_csv(path, index=False)
    code = main(["check-submission", str(path), "-c", str(pipeline.configs["tiny_resnet"])])
    err = capsys.readouterr().err
    assert code == 2 and "same ids, different order" in err and "Traceback" not in err


def test_score_command_reports_one_for_the_solution_itself(pipeline, capsys):
    solution = pipeline.root / "solution.csv"
    code = main(["score", str(solution), "--solution", str(solution), "-c", str(pipeline.configs["tiny_resnet"])])
    assert code == 0
    assert "accuracy 1.0000" in capsys.readouterr().out


def test_demo_command_plants_three_broken_files_among_the_training_rows(pipeline):
    train = pd.read_csv(pipeline.root / "train.csv", dtype=str)
    assert list(train.columns) == ["image_id", "label"]
    assert train["image_id"].str.startswith("broken_").sum() == 3
    assert not train["image_id"].str.endswith(".png").any()  # ids carry no extension: data.image_ext=.png
    assert train["label"].nunique() == 10
