"""Duplicate finding: Hamming distances, grouping, label conflicts, and the perceptual hash itself."""
from __future__ import annotations

from pathlib import Path

import cv2
import imagehash
import numpy as np
import pytest
from conftest import encode
from PIL import Image

from medal.clean.duplicates import find_duplicates, group_rows, near_pairs, popcount64
from medal.clean.scan import blank_fraction, perceptual_hash
from medal.images.decode import decode_rgb

FLOWERS = Path("/work/shared/data/flowers/train")


def random_hashes(n: int, seed: int = 0) -> np.ndarray:
    """Hashes in clusters (each a base with a few bits flipped), so that near pairs exist."""
    rng = np.random.default_rng(seed)
    bases = rng.integers(0, 2**63, size=n // 4, dtype=np.uint64)
    flips = [np.uint64(sum(1 << int(b) for b in rng.choice(64, rng.integers(0, 9), replace=False))) for _ in range(n)]
    return np.array([bases[i % len(bases)] ^ flips[i] for i in range(n)], dtype=np.uint64)


@pytest.mark.parametrize("builtin", [True, False])
def test_popcount64_counts_bits_with_and_without_numpy_bitwise_count(monkeypatch, builtin):
    if not builtin and hasattr(np, "bitwise_count"):
        monkeypatch.delattr(np, "bitwise_count")
    values = random_hashes(40)
    assert popcount64(values).tolist() == [bin(int(v)).count("1") for v in values]


def test_near_pairs_equals_the_naive_comparison_across_blocks():
    hashes = random_hashes(80)
    naive = sorted((i, j) for i in range(80) for j in range(i + 1, 80)
                   if bin(int(hashes[i]) ^ int(hashes[j])).count("1") <= 6)
    left, right = near_pairs(hashes, 6, max_cells=500)  # 6 rows per block: many blocks
    assert len(naive) > 20
    assert sorted(zip(left.tolist(), right.tolist())) == naive


def test_groups_are_transitive_and_exact_copies_group_without_near_matching():
    digests = ["x", "y", "x", "z", "w"]
    hashes = np.array([0b0000, 0b0011, 0b1111_0000, 0b0111, 2**40 | 2**41 | 2**42], dtype=np.uint64)
    # near: 0~1 (2 bits), 1~3 (1 bit), so 0, 1, 3 chain; 2 joins 0 by its digest; 4 is alone.
    assert group_rows(digests, hashes, near=True, threshold=2).tolist() == [0, 0, 0, 0, 1]
    assert group_rows(digests, hashes, near=False, threshold=2).tolist() == [0, 1, 0, 2, 3]


def test_conflicts_are_flagged_per_resolution_and_copies_are_marked():
    ids = ["a", "b", "c", "d"]
    digests = ["x", "x", "x", "y"]
    hashes = np.array([1, 1, 1, 1], dtype=np.uint64)  # d is a near copy of the rest
    frame, found = find_duplicates(ids, ["cat", "cat", "dog", "cat"], digests, hashes, True, 4, "majority")
    assert [[r for r, _ in f] for f in found] == [[], ["duplicate_copy"], ["duplicate_conflict"], []]
    assert frame["kind"].tolist() == ["near"] * 4 and frame["exact_group"].tolist() == ["e0001"] * 3 + [""]
    _, found = find_duplicates(ids, ["cat", "dog", "cat", "eel"], digests, hashes, True, 4, "drop_all")
    assert [[r for r, _ in f] for f in found] == [["duplicate_conflict"]] * 3 + [[]]  # d: nothing left to disagree with
    _, found = find_duplicates(ids, ["cat", "cat", "cat", "eel"], digests, hashes, True, 4, "drop_all")
    near = "near_duplicate_conflict"
    assert [[r for r, _ in f] for f in found] == [[near], ["duplicate_copy", near], ["duplicate_copy", near], [near]]


@pytest.mark.slow
@pytest.mark.skipif(not FLOWERS.is_dir(), reason="needs /work/shared/data/flowers")
def test_perceptual_hash_is_imagehash_phash_bit_for_bit():
    for path in sorted(FLOWERS.iterdir())[:60]:
        image = decode_rgb(path.read_bytes())
        grey = cv2.cvtColor(cv2.resize(image, (32, 32), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
        assert perceptual_hash(image) == int(str(imagehash.phash(Image.fromarray(grey))), 16), path.name


@pytest.mark.slow
@pytest.mark.skipif(not FLOWERS.is_dir(), reason="needs /work/shared/data/flowers")
def test_perceptual_hash_matches_a_resized_recompressed_copy_and_not_other_photos():
    paths = sorted(FLOWERS.iterdir())[:40]
    images = [decode_rgb(p.read_bytes()) for p in paths]
    hashes = np.array([perceptual_hash(i) for i in images], dtype=np.uint64)
    for image, original in zip(images[:10], hashes):
        copy = decode_rgb(encode(cv2.resize(image[..., ::-1], (96, 96), interpolation=cv2.INTER_AREA), ".jpg"))
        assert popcount64(np.uint64(original) ^ np.uint64(perceptual_hash(copy))) <= 6
    left, right = near_pairs(hashes, 6)
    assert len(left) == 0  # forty different flower photos: no false match


def test_blank_fraction_counts_the_most_common_exact_colour():
    image = np.zeros((100, 100, 3), dtype=np.uint8)
    image[:, :30] = (10, 20, 30)
    image[0, 0] = (10, 20, 31)  # one pixel off by one level is another colour
    assert blank_fraction(image, samples=100) == pytest.approx(0.70)
    assert blank_fraction(np.full((5, 5, 3), 7, dtype=np.uint8)) == 1.0
