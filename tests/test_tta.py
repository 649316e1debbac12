"""TTA views on NCHW batches, and the greedy choice of views on OOF."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import noise, png

from medal.core.metrics import score
from medal.images.dataset import load_rgb
from medal.infer.reduce import reduce_views, select_greedy
from medal.infer.sources import SourcesDataset, source_transforms
from medal.modeling.views import VIEWS, expand_views, get_view

STATS = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))

# A 1x1x2x3 batch: rows [0 1 2] and [3 4 5].
X = torch.arange(6.0).reshape(1, 1, 2, 3)


def test_identity_view_returns_the_batch_unchanged():
    assert torch.equal(VIEWS["identity"].augment(X), X)


def test_hflip_reverses_the_width_axis():
    assert VIEWS["hflip"].augment(X)[0, 0].tolist() == [[2.0, 1.0, 0.0], [5.0, 4.0, 3.0]]


def test_vflip_reverses_the_height_axis():
    assert VIEWS["vflip"].augment(X)[0, 0].tolist() == [[3.0, 4.0, 5.0], [0.0, 1.0, 2.0]]


def test_transpose_swaps_height_and_width():
    out = VIEWS["transpose"].augment(X)
    assert out.shape == (1, 1, 3, 2)
    assert out[0, 0].tolist() == [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]]


def test_rot90_turns_the_image_a_quarter_counter_clockwise():
    # [[0 1 2], [3 4 5]] turned left: the last column becomes the first row.
    assert VIEWS["rot90"].augment(X)[0, 0].tolist() == [[2.0, 5.0], [1.0, 4.0], [0.0, 3.0]]


def test_antitranspose_mirrors_about_the_anti_diagonal():
    assert VIEWS["antitranspose"].augment(X)[0, 0].tolist() == [[5.0, 2.0], [4.0, 1.0], [3.0, 0.0]]


def test_d4_is_the_eight_distinct_symmetries_of_the_square_and_closed_under_composition():
    x = torch.arange(9.0).reshape(1, 1, 3, 3)  # no symmetry of its own
    names = expand_views(["d4"])
    assert len(names) == 8
    outputs = {tuple(get_view(n).augment(x).flatten().tolist()) for n in names}
    assert len(outputs) == 8
    for a in names:
        for b in names:
            composed = get_view(a).augment(get_view(b).augment(x))
            assert tuple(composed.flatten().tolist()) in outputs, (a, b)


def test_classification_views_do_not_move_the_class_scores_back():
    logits = torch.randn(4, 3)
    for name in expand_views(["d4", "scale_0.875", "aug0"]):
        assert torch.equal(get_view(name).deaugment(logits), logits)


def test_views_leave_batch_and_channel_axes_alone():
    x = torch.arange(2 * 3 * 4 * 4.0).reshape(2, 3, 4, 4)
    for name, view in VIEWS.items():
        out = view.augment(x)
        for n in range(2):
            for c in range(3):
                assert torch.equal(out[n, c], view.augment(x[n:n + 1, c:c + 1])[0, 0]), name


def test_flips_are_their_own_inverse():
    x = torch.randn(2, 3, 5, 5)
    for name in ["hflip", "vflip", "transpose"]:
        assert torch.equal(VIEWS[name].augment(VIEWS[name].augment(x)), x), name


def test_known_view_names():
    assert set(VIEWS) == {"identity", "hflip", "vflip", "transpose", "rot90", "rot180", "rot270", "antitranspose"}


# Greedy selection on synthetic OOF probabilities (2 classes, 4 rows).
TARGETS = np.array([0, 1, 0, 1])
IDENTITY = np.array([[0.9, 0.1], [0.2, 0.8], [0.45, 0.55], [0.3, 0.7]])  # row 2 narrowly wrong: 3/4
HELPS = np.array([[0.7, 0.3], [0.4, 0.6], [0.8, 0.2], [0.4, 0.6]])      # right everywhere, fixes row 2 in the mean
HURTS = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])      # wrong everywhere


def accuracy(probs: np.ndarray) -> float:
    return score("accuracy", TARGETS, probs)


def test_greedy_keeps_identity_alone_when_the_other_view_hurts():
    assert select_greedy({"identity": IDENTITY, "hflip": HURTS}, accuracy, True) == ["identity"]


def test_greedy_adds_a_view_that_raises_the_score():
    assert select_greedy({"identity": IDENTITY, "hflip": HELPS}, accuracy, True) == ["identity", "hflip"]


def test_greedy_adds_the_helpful_view_and_stops_before_the_harmful_one():
    views = {"identity": IDENTITY, "vflip": HURTS, "hflip": HELPS}
    assert select_greedy(views, accuracy, True) == ["identity", "hflip"]


def test_greedy_does_not_add_a_view_that_only_ties():
    assert select_greedy({"identity": IDENTITY, "hflip": IDENTITY.copy()}, accuracy, True) == ["identity"]


def test_greedy_starts_from_identity_even_when_it_is_listed_last():
    views = {"hflip": HURTS, "identity": IDENTITY}
    assert select_greedy(views, accuracy, True) == ["identity"]


def test_greedy_starts_from_the_first_view_when_identity_is_absent():
    assert select_greedy({"hflip": IDENTITY, "vflip": HURTS}, accuracy, True) == ["hflip"]


def test_greedy_minimises_a_lower_is_better_metric():
    loss = lambda p: score("log_loss", TARGETS, p)  # noqa: E731
    sharper = np.array([[0.99, 0.01], [0.01, 0.99], [0.6, 0.4], [0.01, 0.99]])
    blurry = np.full((4, 2), 0.5)
    assert loss(np.mean([IDENTITY, sharper], axis=0)) < loss(IDENTITY) < loss(np.mean([IDENTITY, blurry], axis=0))
    assert select_greedy({"identity": IDENTITY, "hflip": blurry, "vflip": sharper}, loss, False) == ["identity", "vflip"]


def test_greedy_adds_the_best_remaining_view_each_round_while_the_mean_improves():
    # Score: closeness of the mean to 0. identity=3; +vflip -> 0.5 (beats +hflip -> 1.0); +hflip -> 0.0.
    views = {"identity": np.array([[3.0]]), "hflip": np.array([[-1.0]]), "vflip": np.array([[-2.0]])}
    closeness = lambda p: -float(np.abs(p).sum())  # noqa: E731
    assert select_greedy(views, closeness, True) == ["identity", "vflip", "hflip"]


# Names: sets, scales and seeded random views.


def test_expand_views_unrolls_d4_and_drops_repeats_in_first_seen_order():
    assert expand_views(["hflip", "d4", "scale_1.125", "hflip"]) == [
        "hflip", "identity", "vflip", "transpose", "rot90", "rot180", "rot270", "antitranspose", "scale_1.125"]


@pytest.mark.parametrize("name", ["rot45", "scale_9", "scale_0.1", "scale_x", "aug", "aug100", "D4"])
def test_unknown_view_names_are_refused_naming_them(name):
    with pytest.raises(ValueError, match=rf"'{name}' is not a TTA view; known: .*d4.*scale_<factor>.*aug<k>"):
        expand_views(["identity", name])


def test_scale_and_random_views_read_their_own_source():
    assert get_view("scale_0.875").source == "scale_0.875"
    assert get_view("aug3").source == "aug3"
    assert {get_view(n).source for n in expand_views(["d4"])} == {"base"}


def write_images(folder, count: int) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"img{i}.png"
        path.write_bytes(png(noise(40, 48, seed=i)))
        paths.append(path)
    return paths


def test_sources_dataset_decodes_each_image_once_and_resizes_it_per_scale(tmp_path, monkeypatch):
    import medal.infer.sources as tta

    paths = write_images(tmp_path, 2)
    calls = []
    monkeypatch.setattr(tta, "load_rgb", lambda p: calls.append(p) or load_rgb(p))
    transforms = source_transforms(["base", "scale_0.875", "scale_1.25"], 32, STATS, "none")
    item, target = SourcesDataset(paths, transforms, seed=0)[1]
    assert calls == [paths[1]] and target == -1
    assert {k: tuple(v.shape) for k, v in item.items()} == {
        "base": (3, 32, 32), "scale_0.875": (3, 28, 28), "scale_1.25": (3, 40, 40)}


def test_random_views_are_reproducible_per_image_whatever_the_order(tmp_path):
    paths = write_images(tmp_path, 3)
    transforms = lambda: source_transforms(["aug0", "aug1"], 32, STATS, "photo")  # noqa: E731
    forward = SourcesDataset(paths, transforms(), seed=7)
    backward = SourcesDataset(paths[::-1], transforms(), seed=7)
    for i in range(3):
        a, b = forward[i][0], backward[2 - i][0]
        assert torch.equal(a["aug0"], b["aug0"]) and torch.equal(a["aug1"], b["aug1"])
    first = forward[0][0]
    assert not torch.equal(first["aug0"], first["aug1"])  # two views, two draws
    assert not torch.equal(first["aug0"], SourcesDataset(paths, transforms(), seed=8)[0][0]["aug0"])  # the seed matters


# Reductions over views.

LOGITS = [np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]]), np.array([[0.0, 1.0, 0.0], [3.0, -1.0, 0.0]])]


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_mean_over_probabilities_is_the_mean_of_the_softmaxes():
    np.testing.assert_allclose(reduce_views(LOGITS, "mean", "probs"), (softmax(LOGITS[0]) + softmax(LOGITS[1])) / 2)


def test_mean_over_logits_is_the_softmax_of_the_mean_logits():
    np.testing.assert_allclose(reduce_views(LOGITS, "mean", "logits"), softmax((LOGITS[0] + LOGITS[1]) / 2))


def test_geometric_mean_over_probabilities_is_the_normalised_root_of_the_product():
    root = np.sqrt(softmax(LOGITS[0]) * softmax(LOGITS[1]))
    np.testing.assert_allclose(reduce_views(LOGITS, "gmean", "probs"), root / root.sum(axis=1, keepdims=True))
    # ... which is the softmax of the mean logits: the identity behind refusing gmean over logits.
    np.testing.assert_allclose(reduce_views(LOGITS, "gmean", "probs"), reduce_views(LOGITS, "mean", "logits"))


def test_max_takes_each_class_maximum_then_renormalises():
    top = np.maximum(softmax(LOGITS[0]), softmax(LOGITS[1]))
    np.testing.assert_allclose(reduce_views(LOGITS, "max", "probs"), top / top.sum(axis=1, keepdims=True))
    np.testing.assert_allclose(reduce_views(LOGITS, "max", "logits"), softmax(np.maximum(*LOGITS)))


def test_reductions_of_one_view_are_its_softmax():
    for how, space in [("mean", "probs"), ("gmean", "probs"), ("max", "probs"), ("mean", "logits"), ("max", "logits")]:
        np.testing.assert_allclose(reduce_views(LOGITS[:1], how, space), softmax(LOGITS[0]), err_msg=f"{how} {space}")


def test_geometric_mean_over_logits_is_refused():
    with pytest.raises(ValueError, match="geometric mean over logits"):
        reduce_views(LOGITS, "gmean", "logits")


def test_greedy_selection_scores_the_combination_it_is_given():
    # Row 1 (class 1): identity is wrong; the per-class max of the two views is right, their mean is not.
    targets = np.array([0, 1])
    views = {"identity": np.array([[3.0, 0.0], [3.0, 2.9]]), "hflip": np.array([[3.0, 0.0], [3.45, 3.5]])}
    acc = lambda p: score("accuracy", targets, p)  # noqa: E731
    assert select_greedy(views, acc, True, lambda a: reduce_views(a, "max", "logits")) == ["identity", "hflip"]
    assert select_greedy(views, acc, True, lambda a: reduce_views(a, "mean", "logits")) == ["identity"]
