"""medal report: each part of the experiment's and the blend's page checked against the files of a real tiny run
(the session `pipeline`, and a toy run with progressive resizing), and the page rendered in headless Chromium."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from browser import find_browser, render
from sklearn.metrics import confusion_matrix
from train_toy import make_toy, own_outputs, toy_cfg

from medal.cli import main
from medal.core import layout
from medal.core.report import Document
from medal.modeling.runtime import compute_threads
from medal.report.blend import blend_page
from medal.report.experiment import experiment_document
from medal.report.figures import curves
from medal.train.run import run_train

BROWSER = find_browser()


def blocks_after(doc: Document, heading: str) -> list[tuple[str, object]]:
    """The blocks that follow the (sub)heading `heading`, up to the next one."""
    start = next(i for i, (kind, value) in enumerate(doc.blocks) if kind in ("heading", "subheading") and value == heading)
    rest = doc.blocks[start + 1:]
    end = next((i for i, (kind, _) in enumerate(rest) if kind in ("heading", "subheading")), len(rest))
    return rest[:end]


def table_after(doc: Document, heading: str) -> pd.DataFrame:
    return next(value[0] for kind, value in blocks_after(doc, heading) if kind == "table")


def texts_after(doc: Document, heading: str) -> str:
    return "\n".join(line for kind, value in blocks_after(doc, heading) if kind == "text" for line in value)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy(tmp_path_factory.mktemp("toy"))


@pytest.fixture(scope="module")
def doc(pipeline) -> Document:
    return experiment_document(pipeline.cfg("tiny_resnet"))


@pytest.fixture(scope="module")
def oof(pipeline) -> pd.DataFrame:
    return pd.read_csv(layout.oof_tta_csv(pipeline.cfg("tiny_resnet")), dtype={"image_id": str})


def test_the_confusion_matrix_counts_are_the_oof_argmax_against_the_truth(doc, oof, classes):
    counts = table_after(doc, "OOF confusion matrix")
    expected = confusion_matrix(oof["target"], oof[classes].to_numpy().argmax(1), labels=range(len(classes)))
    assert list(counts.index) == classes and list(counts.columns) == classes
    np.testing.assert_array_equal(counts.to_numpy(), expected)
    assert counts.to_numpy().sum() == len(oof) and "oof_tta.csv" in texts_after(doc, "OOF confusion matrix")


def test_per_class_precision_and_recall_follow_from_the_confusion_counts(doc, classes):
    counts = table_after(doc, "OOF confusion matrix").to_numpy().astype(float)
    table = table_after(doc, "Per-class precision and recall")
    hits = np.diag(counts)
    np.testing.assert_allclose(table["recall"], hits / counts.sum(1))
    np.testing.assert_allclose(table["precision"], np.divide(hits, counts.sum(0), out=np.zeros(len(hits)), where=counts.sum(0) > 0))
    np.testing.assert_array_equal(table["support"], counts.sum(1))


def test_the_cv_table_is_each_folds_done_json_and_the_summary_its_mean_and_std(doc, pipeline):
    cfg = pipeline.cfg("tiny_resnet")
    done = [json.loads(layout.fold_done(cfg, k).read_text()) for k in range(2)]
    table = table_after(doc, "Cross-validation")
    assert list(table.index) == ["fold 0", "fold 1"]
    np.testing.assert_allclose(table["accuracy"].astype(float), [d["best_score"] for d in done])
    assert list(table["best epoch"]) == [d["best_epoch"] for d in done]
    assert list(table["diagnosis"]) == [d["diagnosis"]["verdict"] for d in done]
    for k in range(2):
        seconds = pd.read_csv(cfg.fold_dir(k) / "metrics.csv")["seconds"].sum()
        assert table["seconds"].iat[k] == pytest.approx(seconds)
    scores = [d["best_score"] for d in done]
    summary = texts_after(doc, "Cross-validation")
    assert f"mean **{np.mean(scores):.4f} ± {np.std(scores):.4f}**" in summary
    assert f"**{json.loads(layout.cv_json(cfg).read_text())['cv']:.4f}** without TTA" in summary


def test_the_run_section_names_the_device_and_versions_recorded_at_training(doc, pipeline):
    from importlib.metadata import version

    recorded = json.loads(layout.fold_done(pipeline.cfg("tiny_resnet"), 0).read_text())["environment"]
    table = table_after(doc, "Run")["value"]
    assert (table["device"], table["precision"], table["torch"], table["timm"]) == ("cpu", "float32", version("torch"), version("timm"))
    assert table.to_dict() == recorded
    seconds = sum(pd.read_csv(pipeline.cfg("tiny_resnet").fold_dir(k) / "metrics.csv")["seconds"].sum() for k in range(2))
    assert f"training took {seconds:.0f} s in all" in texts_after(doc, "Run")


def test_the_tta_table_gives_every_candidate_views_gain_over_identity(doc, pipeline):
    tta = json.loads(layout.tta_json(pipeline.cfg("tiny_resnet")).read_text())
    table = table_after(doc, "TTA: each view on the OOF")
    assert list(table.index) == ["identity", "hflip", "vflip"]
    for view, row in table.iterrows():
        assert row["OOF alone"] == pytest.approx(tta["per_view"][view])
        assert row["gain over identity"] == pytest.approx(tta["per_view"][view] - tta["per_view"]["identity"])
        assert (row["chosen"] == "yes") == (view in tta["chosen"])


def test_each_fold_has_its_curves_and_its_diagnosis_with_the_numbers(doc, pipeline):
    cfg = pipeline.cfg("tiny_resnet")
    for k in range(2):
        done = json.loads(layout.fold_done(cfg, k).read_text())
        kinds = [kind for kind, _ in blocks_after(doc, f"fold {k}")]
        assert kinds[0] == "figure"
        text = texts_after(doc, f"fold {k}")
        g = done["diagnosis"]
        assert f"**{g['verdict']}**: train CE {g['train_loss']:.4f} against validation CE {g['valid_loss']:.4f}" in text
        assert f"at epoch {done['best_epoch']} " in text


def test_the_gallery_and_the_augmented_grids_are_on_the_page(doc, pipeline):
    gallery = blocks_after(doc, "Hardest OOF images")
    assert [kind for kind, _ in gallery] == ["text", "figure"] and gallery[1][1][0].startswith(b"\x89PNG")
    grids = [value for kind, value in blocks_after(doc, "Augmented training samples") if kind == "image"]
    assert grids == [("fold0/augment_16px.png", "augment_16px")]
    assert not any(kind == "heading" and value.startswith("LR finder") for kind, value in doc.blocks)  # none was run


def test_the_curves_mark_each_progressive_stage_and_follow_metrics_and_steps(toy, tmp_path):
    cfg = toy_cfg(toy, own_outputs(toy, tmp_path), "train.image_size=24", "train.stages=[{epochs: 2, image_size: 16, batch_size: 8}, "
                  "{epochs: 1, image_size: 24, batch_size: 8}]", "report.sample_grid=0", "report.gallery_size=0")
    with compute_threads(torch.device("cpu"), 1):
        run_train(cfg, fold=0)
    metrics, steps = (pd.read_csv(cfg.fold_dir(0) / name) for name in ("metrics.csv", "steps.csv"))
    c = curves(metrics, steps, cfg.metric)
    assert list(c.epochs) == list(metrics["epoch"]) and c.boundaries == [(c.epochs[2] - 1, "16px -> 24px")]
    np.testing.assert_allclose(c.lr, steps["lr"])
    # Each epoch's last step lands on that epoch's metrics row, so the LR and loss curves share one axis.
    ends = steps.groupby("epoch").tail(1).index
    np.testing.assert_allclose(c.lr_x[ends], c.epochs)
    text = texts_after(experiment_document(cfg), "fold 0")
    assert "Progressive resizing: epochs 1-2 at 16px; epochs 3-3 at 24px." in text


@pytest.mark.slow  # over 2 s on a quiet 2-core machine
def test_an_lr_finder_plot_is_shown_with_its_suggestion(toy, tmp_path):
    cfg = toy_cfg(toy, own_outputs(toy, tmp_path), "train.epochs=1", "report.sample_grid=0", "report.gallery_size=0")
    with compute_threads(torch.device("cpu"), 1):
        run_train(cfg, fold=0)
    assert main(["lr-find", "-c", str(toy), f"output_dir={tmp_path}", "lr_find.steps=12", "lr_find.diverge=100"]) == 0
    found = json.loads((cfg.exp_dir / "lr_find_fold0.json").read_text())
    doc = experiment_document(cfg)
    assert f"Suggested LR {found['suggested_lr']:.3g}" in texts_after(doc, "LR finder (fold0)")
    assert [v for k, v in blocks_after(doc, "LR finder (fold0)") if k == "image"] == [("lr_find_fold0.png", "lr_find_fold0")]


def test_the_blend_page_shows_the_weights_methods_and_heatmap_of_blend_json(pipeline):
    cfg = pipeline.cfg("tiny_resnet")
    report = json.loads((layout.blend_dir(cfg, "e2e") / "blend.json").read_text())
    page = blend_page(cfg, "e2e")
    models = table_after(page, "Models (OOF)")
    assert models["weight"].to_dict() == pytest.approx(report["weights"])
    assert models["cv"].to_dict() == pytest.approx(report["cv"])
    methods = table_after(page, "Blend methods: in-sample against nested CV")
    for method, e in report["methods"].items():
        assert (methods.at[method, "in-sample CV"], methods.at[method, "nested CV"]) == pytest.approx((e["in_sample"], e["nested_cv"]))
    assert ("correlation.png", "correlation heatmap") in [v for k, v in blocks_after(page, "OOF correlation (Pearson)") if k == "image"]
    # The blend stage's report.md is the same document, rendered to Markdown.
    assert (layout.blend_dir(cfg, "e2e") / "report.md").read_text().startswith(page.markdown().split("## Freshness")[0].rstrip())


def test_the_report_command_writes_self_contained_pages(pipeline, tmp_path, capsys):
    first = str(pipeline.configs["tiny_resnet"])
    assert main(["report", "-c", first, "--out", str(tmp_path / "exp.html")]) == 0
    assert main(["report", "-c", first, "--blend", "--out", str(tmp_path / "blend.html")]) == 0
    for name, images in [("exp.html", 5), ("blend.html", 1)]:
        page = (tmp_path / name).read_text()
        sources = re.findall(r'<img src="([^"]*)"', page)
        assert len(sources) >= images and all(s.startswith("data:image/png;base64,") for s in sources)
        assert not re.search(r"<(script|link)\b|https?://", page)  # opens offline: nothing to fetch


def test_report_before_training_or_on_an_unknown_blend_names_the_command(pipeline, tmp_path, capsys):
    first = str(pipeline.configs["tiny_resnet"])
    assert main(["report", "-c", first, "name=never_trained", "--out", str(tmp_path / "x.html")]) == 2
    assert "no trained fold" in capsys.readouterr().err
    assert main(["report", "-c", first, "--blend", "nope", "--out", str(tmp_path / "y.html")]) == 2
    assert "no finished blend 'nope'" in capsys.readouterr().err


@pytest.mark.skipif(BROWSER is None, reason="Chromium is not installed (scripts/install_chromium.sh could not install "
                                            "it): the report page was not rendered in a browser")
def test_the_demo_report_renders_in_chromium_without_a_broken_image_or_error(pipeline, tmp_path):
    assert pipeline.codes["report:tiny_resnet"] == 0
    shown = render(pipeline.cfg("tiny_resnet").exp_dir / "report.html", BROWSER)
    (tmp_path / "report.png").write_bytes(shown.png)
    assert shown.errors == [] and shown.broken_images == [] and shown.images == 2 + 3  # two folds' curves, the confusion matrix, the gallery, one augment grid
    assert all(f"fold {k}" in shown.text for k in range(2)) and "OOF confusion matrix" in shown.text
    assert shown.png.startswith(b"\x89PNG") and len(shown.png) > 50_000
    blend = render(layout.blend_dir(pipeline.cfg(), "e2e") / "report.html", BROWSER)
    assert (blend.errors, blend.broken_images, blend.images) == ([], [], 1) and "nested CV" in blend.text


@pytest.mark.slow
@pytest.mark.skipif(BROWSER is None, reason="Chromium is not installed: the browser check itself was not tried")
def test_the_browser_check_catches_a_broken_image_and_a_script_error(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text('<html><body><p>x</p><img src="data:image/png;base64,AAAA" alt="corrupt">'
                    '<img src="missing.png" alt="absent"><script>undefinedFunction()</script></body></html>')
    shown = render(page, BROWSER)
    assert shown.broken_images == ["corrupt", "absent"]
    assert any("undefinedFunction" in e for e in shown.errors) and any("load failed" in e for e in shown.errors)
