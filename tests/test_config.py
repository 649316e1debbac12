"""Config files: `base:` inheritance, key=value overrides, and refusals that name the key."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import write_yaml

from medal.core.config import (
    Config,
    ConfigError,
    config_snapshot,
    describe_keys,
    load_config,
)


@pytest.fixture
def data_root(tmp_path) -> Path:
    root = tmp_path / "comp"
    root.mkdir()
    return root


@pytest.fixture
def family(tmp_path, data_root) -> Path:
    """A parent with data, train and infer sections, and a child that overrides part of `train`."""
    write_yaml(tmp_path / "cfg" / "base.yaml", {
        "seed": 7,
        "data": {"root": str(data_root), "image_ext": ".png"},
        "train": {"epochs": 3, "lr": 0.01, "batch_size": 8},
        "infer": {"tta": ["identity", "hflip"]},
    })
    return write_yaml(tmp_path / "cfg" / "child.yaml", {
        "base": "base.yaml",
        "name": "child",
        "train": {"lr": 0.5},
        "infer": {"tta": ["identity"]},
    })


def test_child_value_overrides_the_parents(family):
    assert load_config(family).train.lr == 0.5


def test_sections_merge_key_by_key_keeping_parent_keys_the_child_does_not_set(family):
    cfg = load_config(family)
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.seed) == (3, 8, 7)


def test_a_list_in_the_child_replaces_the_parents_list(family):
    assert load_config(family).infer.tta == ["identity"]


def test_unset_keys_take_the_documented_defaults(family):
    cfg = load_config(family)
    assert (cfg.train.weight_decay, cfg.folds.n_folds, cfg.metric) == (0.01, 5, "accuracy")


def test_base_is_found_relative_to_the_child_file_not_the_working_directory(family, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_config(family).seed == 7


def test_grandparent_values_reach_the_grandchild(tmp_path, family):
    grandchild = write_yaml(tmp_path / "cfg" / "sub" / "grandchild.yaml",
                            {"base": "../child.yaml", "name": "grandchild", "train": {"epochs": 9}})
    cfg = load_config(grandchild)
    assert (cfg.name, cfg.train.epochs, cfg.train.lr, cfg.seed) == ("grandchild", 9, 0.5, 7)


def test_a_config_that_inherits_from_itself_is_refused(tmp_path, data_root):
    a = write_yaml(tmp_path / "a.yaml", {"base": "b.yaml", "name": "a", "data": {"root": str(data_root)}})
    write_yaml(tmp_path / "b.yaml", {"base": "a.yaml"})
    with pytest.raises(ConfigError, match="inherits from itself"):
        load_config(a)


def test_override_of_a_nested_key_is_typed_as_yaml_float(family):
    cfg = load_config(family, ["train.lr=3e-4"])
    assert isinstance(cfg.train.lr, float) and cfg.train.lr == pytest.approx(3e-4)


def test_override_values_are_parsed_as_yaml_ints_bools_and_lists(family):
    cfg = load_config(family, ["train.epochs=12", "runtime.amp=false", "infer.tta=[identity, vflip]"])
    assert (cfg.train.epochs, cfg.runtime.amp, cfg.infer.tta) == (12, False, ["identity", "vflip"])


def test_overrides_apply_after_the_files(family):
    assert load_config(family, ["seed=99"]).seed == 99


def test_override_can_fill_a_section_absent_from_the_files(family):
    assert load_config(family, ["folds.n_folds=3"]).folds.n_folds == 3


def test_unknown_override_key_is_refused_naming_it_and_suggesting_the_close_key(family):
    with pytest.raises(ConfigError) as err:
        load_config(family, ["train.lrr=0.1"])
    assert "train.lrr" in str(err.value)
    assert "did you mean 'lr'" in str(err.value)


def test_unknown_key_in_a_file_is_refused_naming_the_file_and_the_key(tmp_path, data_root):
    path = write_yaml(tmp_path / "typo.yaml", {"name": "x", "data": {"root": str(data_root)}, "folds": {"n_fold": 3}})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "folds.n_fold" in str(err.value) and "did you mean 'n_folds'" in str(err.value)
    assert str(path) in str(err.value)


def test_unknown_top_level_key_is_refused_naming_it(family):
    with pytest.raises(ConfigError, match=r"\bsede: unknown key \(did you mean 'seed'\?\)"):
        load_config(family, ["sede=1"])


def test_unknown_section_is_refused_suggesting_the_close_section(family):
    with pytest.raises(ConfigError, match=r"\btrian: unknown key \(did you mean 'train'\?\)"):
        load_config(family, ["trian.lr=0.1"])


def test_wrong_type_is_refused_naming_the_key_and_the_value(family):
    with pytest.raises(ConfigError) as err:
        load_config(family, ["train.epochs=abc"])
    assert "train.epochs" in str(err.value) and "'abc'" in str(err.value)


def test_value_out_of_range_is_refused_naming_the_key(family):
    with pytest.raises(ConfigError, match=r"folds\.n_folds"):
        load_config(family, ["folds.n_folds=1"])


def test_metric_outside_the_known_list_is_refused(family):
    with pytest.raises(ConfigError, match=r"metric.*'rmse'"):
        load_config(family, ["metric=rmse"])


def test_missing_required_name_is_refused_naming_it(tmp_path, data_root):
    path = write_yaml(tmp_path / "noname.yaml", {"data": {"root": str(data_root)}})
    with pytest.raises(ConfigError, match=r"\bname: required value is missing"):
        load_config(path)


def test_missing_data_section_is_refused_naming_it(tmp_path):
    path = write_yaml(tmp_path / "nodata.yaml", {"name": "x"})
    with pytest.raises(ConfigError, match=r"\bdata: required value is missing"):
        load_config(path)


def test_missing_data_folder_is_refused_naming_the_folder(tmp_path):
    absent = tmp_path / "no_such_competition"
    path = write_yaml(tmp_path / "c.yaml", {"name": "x", "data": {"root": str(absent)}})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "data.root" in str(err.value) and str(absent) in str(err.value)


def test_relative_data_root_is_resolved_against_the_working_directory(tmp_path, data_root, monkeypatch):
    path = write_yaml(tmp_path / "cfg" / "rel.yaml", {"name": "x", "data": {"root": data_root.name}})
    monkeypatch.chdir(tmp_path)
    assert load_config(path).data.root.resolve() == data_root.resolve()
    monkeypatch.chdir(tmp_path / "cfg")
    with pytest.raises(ConfigError, match="data.root"):
        load_config(path)


def test_name_with_a_slash_is_refused(family):
    with pytest.raises(ConfigError, match=r"\bname: .*plain folder name"):
        load_config(family, ["name=a/b"])


@pytest.mark.parametrize("item", ["train.lr", "=3", ""])
def test_override_without_key_equals_value_is_refused(family, item):
    with pytest.raises(ConfigError, match="must look like key=value"):
        load_config(family, [item])


def test_override_below_a_scalar_key_is_refused_naming_it(family):
    with pytest.raises(ConfigError, match=r"'seed' is not a section"):
        load_config(family, ["seed.value=1"])


def test_missing_config_file_is_refused_naming_it(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_missing_base_file_is_refused_naming_it(tmp_path, data_root):
    path = write_yaml(tmp_path / "c.yaml", {"base": "missing_parent.yaml", "name": "x", "data": {"root": str(data_root)}})
    with pytest.raises(ConfigError, match="missing_parent.yaml does not exist"):
        load_config(path)


def test_invalid_yaml_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml is not valid YAML"):
        load_config(path)


def test_a_yaml_file_that_is_not_a_mapping_is_refused(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(path)


def test_config_error_lists_every_problem_at_once(family):
    with pytest.raises(ConfigError) as err:
        load_config(family, ["train.epochs=abc", "train.lrr=1"])
    assert "train.epochs" in str(err.value) and "train.lrr" in str(err.value)


def test_snapshot_reloads_to_the_same_config(family):
    cfg = load_config(family, ["train.lr=3e-4", "model.backbone=test_resnet"])
    assert Config.model_validate(yaml.safe_load(config_snapshot(cfg))).model_dump() == cfg.model_dump()
    assert cfg.source == (str(family), ("train.lr=3e-4", "model.backbone=test_resnet"))


def test_output_folders_follow_competition_and_experiment_names(family, data_root, tmp_path):
    cfg = load_config(family, [f"output_dir={tmp_path / 'o'}"])
    assert cfg.exp_dir == tmp_path / "o" / data_root.name / "child"
    assert cfg.fold_dir(3) == tmp_path / "o" / data_root.name / "child" / "fold3"
    assert load_config(family, [f"output_dir={tmp_path / 'o'}", "data.name=short"]).data_dir == tmp_path / "o" / "short"


def test_describe_keys_lists_dotted_keys_with_defaults():
    lines = describe_keys()
    assert any(line.strip().startswith("train.lr (default 'auto')") for line in lines)
    assert any(line.strip().startswith("data.root (required)") for line in lines)
    assert any(line.strip().startswith("name (required)") for line in lines)


def test_blend_defaults_to_comparing_every_method_by_nested_cv(tmp_path, data_root):
    cfg = load_config(write_yaml(tmp_path / "c.yaml", {"name": "x", "data": {"root": str(data_root)}}), [])
    assert cfg.blend.method == "compare"


# Rank settings write per-class ranks, not probabilities: only for a metric that reads them (issue 10).


def test_a_rank_blend_is_refused_for_a_metric_that_reads_probabilities_naming_key_and_metric(family):
    with pytest.raises(ConfigError) as err:
        load_config(family, ["metric=log_loss", "blend.method=rank"])
    assert str(err.value) == (
        f"invalid config {family}:\n"
        "  blend.method: rank blends per-class ranks, which metric 'log_loss' does not read (only roc_auc reads "
        "ranks); use mean, greedy, caruana or optimize, or compare (got 'rank')")


def test_a_rank_fold_average_is_refused_for_a_metric_that_reads_probabilities(family):
    with pytest.raises(ConfigError, match=r"infer.fold_average: rank averages the fold models' per-class ranks, which "
                                          r"metric 'accuracy' does not read \(only roc_auc reads ranks\); use mean"):
        load_config(family, ["infer.fold_average=rank"])


def test_both_rank_settings_are_listed_in_one_error(family):
    with pytest.raises(ConfigError) as err:
        load_config(family, ["metric=qwk", "infer.fold_average=rank", "blend.method=rank"])
    lines = str(err.value).splitlines()[1:]
    assert [line.split(":")[0].strip() for line in lines] == ["blend.method", "infer.fold_average"]


def test_rank_settings_are_accepted_for_roc_auc(family):
    cfg = load_config(family, ["metric=roc_auc", "infer.fold_average=rank", "blend.method=rank"])
    assert (cfg.blend.method, cfg.infer.fold_average) == ("rank", "rank")


def test_a_config_built_in_code_is_refused_too(data_root):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"blend.method\n  rank blends per-class ranks, which metric 'accuracy'"):
        Config.model_validate({"name": "x", "data": {"root": str(data_root)}, "blend": {"method": "rank"}})


def test_switching_the_metric_away_from_roc_auc_under_a_rank_blend_is_refused(family):
    from pydantic import ValidationError

    cfg = load_config(family, ["metric=roc_auc", "blend.method=rank"])
    with pytest.raises(ValidationError, match=r"metric 'f1_macro' does not read"):
        cfg.metric = "f1_macro"
