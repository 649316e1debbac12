"""Kaggle: paths inside a kernel, `infer --test-only`, `medal kaggle pack`, and the packed kernel run end to end
in a simulated /kaggle (a temporary folder, MEDAL_KAGGLE_ROOT), offline."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from conftest import EXPERIMENTS, N_FOLDS, write_yaml

from medal.core import layout, provenance
from medal.core.config import ConfigError, load_config
from medal.core.io import read_csv
from medal.core.submission import check_submission
from medal.infer import run as infer_run
from medal.kaggle import pack

SRC = Path(__file__).resolve().parents[1] / "src"
COMPETITION = "digits-comp"  # the competition's folder under input/, unlike the local folder's name
DATASET = "medal-tiny-pack"

# sitecustomize for the simulated kernel: every Python it starts (the kernel, pip, medal) fails on any name
# lookup or connection outside the machine and records the attempt (a lookup first: without DNS, a
# connection attempt fails there and would pass unseen).
NO_NETWORK = '''
import os, socket
def _record(what):
    with open(os.environ["MEDAL_NETWORK_LOG"], "a") as log:
        log.write(f"{what}\\n")
    raise OSError("network is off in the simulated kernel")
def _lookup(host, *args, **kwargs):
    if host not in (None, "localhost", "127.0.0.1", "::1"):
        _record(host)
    return _getaddrinfo(host, *args, **kwargs)
def _connect(self, address, *args):
    if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1"):
        _record(address)
    return _socket_connect(self, address, *args)
_getaddrinfo, _socket_connect = socket.getaddrinfo, socket.socket.connect
socket.getaddrinfo, socket.socket.connect = _lookup, _connect
'''


def in_kernel(monkeypatch, root: Path) -> None:
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    monkeypatch.setenv("MEDAL_KAGGLE_ROOT", str(root))


def fake_competition(pipeline, root: Path) -> Path:
    comp = root / "input" / COMPETITION
    shutil.copytree(pipeline.root, comp, ignore=shutil.ignore_patterns("solution.csv"))
    return comp


def tree_state(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# Paths in a kernel: medal.core.kaggle_env through load_config.


def test_outside_a_kernel_the_config_is_unchanged(pipeline, monkeypatch):
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    cfg = pipeline.cfg()
    assert cfg.data.root == pipeline.root and cfg.output_dir == pipeline.out and cfg.data.name is None


def test_in_a_kernel_the_competition_is_found_by_its_sample_and_outputs_go_to_working(pipeline, tmp_path, monkeypatch):
    comp = fake_competition(pipeline, tmp_path)
    (tmp_path / "input" / "other-dataset" / "nested").mkdir(parents=True)  # holds no sample: not a candidate
    in_kernel(monkeypatch, tmp_path)
    cfg = load_config(write_yaml(tmp_path / "exp.yaml", {"name": "e", "output_dir": "outputs",
                                                          "data": {"root": "input/demo"}}))
    assert cfg.data.root == comp
    assert cfg.data.competition == "demo"  # the local name, so the packed output tree is found
    assert cfg.output_dir == tmp_path / "working" / "outputs"
    assert cfg.blend.submission_dir == tmp_path / "working" / "submissions"


def test_in_a_kernel_an_output_under_input_is_refused_naming_the_key(pipeline, tmp_path, monkeypatch):
    fake_competition(pipeline, tmp_path)
    in_kernel(monkeypatch, tmp_path)
    path = write_yaml(tmp_path / "exp.yaml", {"name": "e", "output_dir": str(tmp_path / "input" / "out"),
                                             "data": {"root": "input/demo"}})
    with pytest.raises(ConfigError, match=r"output_dir: .*input/out is under .*cannot write"):
        load_config(path)


def test_in_a_kernel_two_unnamed_competitions_are_refused_listing_both(pipeline, tmp_path, monkeypatch):
    fake_competition(pipeline, tmp_path)
    shutil.copytree(tmp_path / "input" / COMPETITION, tmp_path / "input" / "another")
    in_kernel(monkeypatch, tmp_path)
    with pytest.raises(ConfigError, match=r"2 folders .*another.*digits-comp"):
        load_config(write_yaml(tmp_path / "exp.yaml", {"name": "e", "data": {"root": "input/elsewhere"}}))


# infer --test-only


@pytest.fixture(scope="module")
def test_only(pipeline, tmp_path_factory) -> dict:
    """tiny_resnet re-predicted with --test-only on a copy of the outputs; the OOF pass fails if it runs."""
    out = pipeline.copy_outputs(tmp_path_factory.mktemp("test_only") / "outputs")
    cfg = pipeline.cfg("tiny_resnet", f"output_dir={out}")
    oof_before = layout.oof_tta_csv(cfg).read_bytes()
    (layout.test_pred_csv(cfg)).unlink()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(infer_run, "oof_pass", lambda *a, **k: pytest.fail("--test-only ran the OOF pass"))
        infer_run.run_infer(cfg, test_only=True)
    return {"cfg": cfg, "oof_before": oof_before}


def test_test_only_predicts_what_the_full_infer_predicted(pipeline, test_only, classes):
    ids = ["image_id"]
    new = read_csv(layout.test_pred_csv(test_only["cfg"]), "new", ids + classes, ids)
    old = read_csv(layout.test_pred_csv(pipeline.cfg("tiny_resnet")), "old", ids + classes, ids)
    assert new["image_id"].tolist() == old["image_id"].tolist()
    pd.testing.assert_frame_equal(new[classes], old[classes], atol=1e-6, rtol=0)


def test_test_only_keeps_the_oof_file_and_writes_a_manifest_blend_accepts(test_only):
    cfg = test_only["cfg"]
    assert layout.oof_tta_csv(cfg).read_bytes() == test_only["oof_before"]
    record = provenance.verify(layout.infer_manifest(cfg), "no manifest", cfg)
    assert record["outputs"]["test_pred.csv"]["sha256"] == provenance.sha256(layout.test_pred_csv(cfg))


def test_test_only_without_tta_json_says_to_run_the_full_infer(pipeline, tmp_path):
    cfg = pipeline.cfg("tiny_resnet", f"output_dir={pipeline.copy_outputs(tmp_path / 'outputs')}")
    layout.tta_json(cfg).unlink()
    with pytest.raises(FileNotFoundError, match=r"tta.json does not exist.*full `medal infer"):
        infer_run.run_infer(cfg, test_only=True)


def test_test_only_under_other_infer_settings_is_refused_naming_them(pipeline, tmp_path):
    cfg = pipeline.cfg("tiny_resnet", f"output_dir={pipeline.copy_outputs(tmp_path / 'outputs')}", "infer.tta=[identity]")
    with pytest.raises(provenance.StaleError, match=r"infer.tta \['identity', 'hflip', 'vflip'\] -> \['identity'\]"):
        infer_run.run_infer(cfg, test_only=True)


# medal kaggle pack


@pytest.fixture(scope="module")
def packed(pipeline, tmp_path_factory):
    out = pipeline.copy_outputs(tmp_path_factory.mktemp("pack") / "outputs")
    cfgs = [pipeline.cfg(name, f"output_dir={out}") for name in EXPERIMENTS]
    return pack(cfgs, out.parent / "kaggle", user="someone", dataset=DATASET, download=False)


def test_the_dataset_is_flat_with_wheel_configs_and_metadata(packed):
    assert [p for p in packed.dataset.iterdir() if p.is_dir()] == []
    assert set(packed.files) == {"outputs.zip", "medal-pack.json", "dataset-metadata.json", "tiny_resnet.yaml",
                                 "tiny_effnet.yaml", "medal-0.1.0-py3-none-any.whl"}
    meta = json.loads((packed.dataset / "dataset-metadata.json").read_text())
    assert meta == {"title": DATASET, "id": f"someone/{DATASET}", "licenses": [{"name": "CC0-1.0"}]}


def test_the_tree_holds_best_checkpoints_and_the_provenance_chain_but_no_last_pt(packed):
    names = zipfile.ZipFile(packed.dataset / "outputs.zip").namelist()
    for exp in EXPERIMENTS:
        for k in range(N_FOLDS):
            assert {f"demo/{exp}/fold{k}/{f}" for f in ("best.pt", "manifest.json", "oof.csv", "done.json")} <= set(names)
        assert {f"demo/{exp}/{f}" for f in ("infer.manifest.json", "oof_tta.csv", "tta.json", "config.yaml")} <= set(names)
    assert {"demo/folds.csv", "demo/folds.manifest.json", "demo/clean.csv", "demo/clean.manifest.json"} <= set(names)
    assert not [n for n in names if n.endswith("last.pt")]


def test_the_pack_records_each_experiments_chosen_views(pipeline, packed):
    record = json.loads((packed.dataset / "medal-pack.json").read_text())
    for entry in record["experiments"]:
        tta = json.loads(layout.tta_json(pipeline.cfg(entry["name"])).read_text())
        assert entry["tta"] == tta["chosen"]


def test_the_kernel_metadata_is_offline_on_gpu_with_both_sources(packed):
    meta = json.loads((packed.kernel / "kernel-metadata.json").read_text())
    assert meta["enable_gpu"] is True and meta["enable_internet"] is False
    assert meta["dataset_sources"] == [f"someone/{DATASET}"] and meta["competition_sources"] == ["demo"]
    assert (packed.kernel / meta["code_file"]).is_file() and meta["kernel_type"] == "script"


def test_pack_without_infer_says_to_run_it(pipeline, tmp_path):
    out = pipeline.copy_outputs(tmp_path / "outputs")
    cfg = pipeline.cfg("tiny_resnet", f"output_dir={out}")
    layout.infer_manifest(cfg).unlink()
    with pytest.raises(provenance.StaleError, match=r"no current predictions.*medal infer"):
        pack([cfg], tmp_path / "kaggle", user="someone", download=False)


# The kernel, end to end in a simulated /kaggle, offline.


@pytest.fixture(scope="module")
def kernel_run(pipeline, packed, tmp_path_factory) -> dict:
    """input/: the competition (under another folder name, with a shuffled subset of the sample as the hidden
    test set) and the packed dataset; the kernel script run as Kaggle runs it, in working/."""
    root = tmp_path_factory.mktemp("kaggle")
    comp = fake_competition(pipeline, root)
    sample = pd.read_csv(comp / "sample_submission.csv", dtype=str)
    sample.sample(frac=0.5, random_state=0).to_csv(comp / "sample_submission.csv", index=False)
    shutil.copytree(packed.dataset, root / "input" / DATASET)
    (root / "working").mkdir()
    guard = root / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(NO_NETWORK)
    before = tree_state(root / "input")
    env = {**os.environ, "KAGGLE_KERNEL_RUN_TYPE": "Batch", "MEDAL_KAGGLE_ROOT": str(root),
           "PYTHONPATH": str(guard), "MEDAL_NETWORK_LOG": str(root / "network.log")}
    result = subprocess.run([sys.executable, str(packed.kernel / "medal_kernel.py")], cwd=root / "working", env=env,
                            capture_output=True, text=True, timeout=600)
    return {"root": root, "comp": comp, "result": result, "before": before}


def test_the_kernel_writes_a_submission_that_matches_the_sample(kernel_run, classes):
    result = kernel_run["result"]
    assert result.returncode == 0, result.stdout + result.stderr
    submission = kernel_run["root"] / "working" / "submission.csv"
    checked = check_submission(submission, kernel_run["comp"] / "sample_submission.csv", "image_id", "label", classes,
                               metric="accuracy")
    sample = pd.read_csv(kernel_run["comp"] / "sample_submission.csv", dtype=str)
    assert checked["image_id"].tolist() == sample["image_id"].tolist()


def test_the_kernel_predicts_the_hidden_test_set_as_the_local_blend_did(pipeline, kernel_run):
    assert kernel_run["result"].returncode == 0, kernel_run["result"].stderr
    local = pd.read_csv(pipeline.submission, dtype=str).set_index("image_id")
    kernel = pd.read_csv(kernel_run["root"] / "working" / "submission.csv", dtype=str).set_index("image_id")
    assert kernel["label"].equals(local.loc[kernel.index, "label"])


def test_the_kernel_runs_the_packed_medal_offline_and_writes_nothing_under_input(kernel_run):
    result = kernel_run["result"]
    assert result.returncode == 0, result.stderr
    assert f"medal from {kernel_run['root'] / 'temp' / 'medal-site'}" in result.stdout
    assert not (kernel_run["root"] / "network.log").exists()
    assert tree_state(kernel_run["root"] / "input") == kernel_run["before"]
