"""Training batches: a seeded batch sampler (uniform, or weighted towards hard examples) and per-sample loss tracking.

Reproducibility: every batch carries its own augmentation seed, drawn from the
epoch's seed, and the dataset re-seeds albumentations with it before the
batch's first image. A batch's augmentations therefore depend only on (seed,
fold, epoch, batch), not on which worker decodes it, how many workers there
are, or whether they persist between epochs, so a resumed run draws exactly
the batches of an uninterrupted one.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, WeightedRandomSampler

from medal.core.config import RuntimeConfig
from medal.modeling.runtime import make_loader

NO_SEED = -1


class SeededBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields batches of (index, seed) pairs; only a batch's first pair carries a seed (>= 0)."""

    def __init__(self, n: int, batch_size: int, drop_last: bool, rank: int = 0, ranks: int = 1) -> None:
        self.n, self.batch_size, self.drop_last = n, batch_size, drop_last
        # Under torchrun every rank draws the same order and takes every ranks-th sample of it, from `rank` on:
        # disjoint shards of one draw (hard-example weights included), n // ranks samples each.
        self.rank, self.ranks = rank, ranks
        self.epoch_seed = 0
        self.weights: np.ndarray | None = None

    def set_epoch(self, epoch_seed: int, weights: np.ndarray | None = None) -> None:
        """Seed the next pass; `weights` (one per sample) draw with replacement via WeightedRandomSampler."""
        self.epoch_seed, self.weights = epoch_seed, weights

    def order(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.epoch_seed)
        if self.weights is None:
            return torch.randperm(self.n, generator=generator).tolist()
        sampler = WeightedRandomSampler(torch.as_tensor(self.weights, dtype=torch.double), self.n,
                                        replacement=True, generator=generator)
        return list(sampler)

    def __iter__(self):
        order = self.order()[self.rank::self.ranks][:self.shard]
        seeds = np.random.SeedSequence(self.epoch_seed).generate_state(len(self) * self.ranks)
        for b in range(len(self)):
            chunk = order[b * self.batch_size:(b + 1) * self.batch_size]
            seed = int(seeds[b * self.ranks + self.rank])
            yield [(index, seed if j == 0 else NO_SEED) for j, index in enumerate(chunk)]

    @property
    def shard(self) -> int:
        """Samples per rank per epoch (all of them when alone)."""
        return self.n // self.ranks

    def __len__(self) -> int:
        return self.shard // self.batch_size if self.drop_last else math.ceil(self.shard / self.batch_size)


class SeededDataset(Dataset):
    """Wraps an ImageDataset: item (index, seed) -> (image, target, index), re-seeding its transform first."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        if seed != NO_SEED:
            self.base.transform.set_random_seed(seed)
        image, target = self.base[index]
        return image, target, index


class LossTracker:
    """Each training sample's most recent loss (NaN until first seen), for hard-example oversampling."""

    def __init__(self, n: int) -> None:
        self.losses = np.full(n, np.nan)

    def record(self, indices: torch.Tensor, losses: torch.Tensor) -> None:
        self.losses[indices.cpu().numpy()] = losses.detach().float().cpu().numpy()

    def weights(self, strength: float, cap: float) -> np.ndarray:
        return hard_example_weights(self.losses, strength, cap)

    def state_dict(self) -> dict:
        return {"losses": torch.from_numpy(self.losses.copy())}

    def load_state_dict(self, state: dict) -> None:
        losses = state["losses"].numpy()
        if losses.shape != self.losses.shape:
            raise ValueError(f"the checkpoint's loss tracker has {losses.shape[0]} samples, the fold has {self.losses.shape[0]}")
        self.losses = losses.copy()


def hard_example_weights(losses: np.ndarray, strength: float, cap: float) -> np.ndarray:
    """Sampling weight per sample: (loss / mean loss) ** strength, clipped to [1/cap, cap].
    Samples never seen (NaN) count as average."""
    losses = np.where(np.isfinite(losses), losses, np.nan)
    mean = np.nanmean(losses) if np.isfinite(losses).any() else 1.0
    ratio = np.nan_to_num(losses / max(mean, 1e-12), nan=1.0)
    return np.clip(np.maximum(ratio, 1e-12) ** strength, 1.0 / cap, cap)


def weight_summary(weights: np.ndarray) -> dict[str, float]:
    """How skewed the sampling is: quantiles relative to the mean, the share of the draws going to the
    top 10% of samples, and the effective sample size as a fraction of n."""
    w = weights / weights.mean()
    top = np.sort(w)[::-1][:max(1, len(w) // 10)]
    return {"w_min": float(w.min()), "w_median": float(np.median(w)), "w_max": float(w.max()),
            "top10_share": float(top.sum() / w.sum()), "ess": float(w.sum() ** 2 / (w ** 2).sum() / len(w))}


def private_generator(seed: int) -> torch.Generator:
    """A loader's own generator: creating an iterator draws a worker base seed from it, and from torch's global
    RNG without one, which would shift dropout and mixup draws whenever workers (re)start, e.g. after a resume."""
    return torch.Generator().manual_seed(seed)


def seeded_train_loader(dataset: Dataset, batch_size: int, seed: int, runtime: RuntimeConfig, device: torch.device,
                        persistent: bool = True, rank: int = 0, ranks: int = 1) -> tuple[DataLoader, SeededBatchSampler]:
    """Training batches drawn by a SeededBatchSampler (call its set_epoch before each pass), each carrying its
    own augmentation seeds; the last partial batch is dropped unless it is the only one. The loader draws its
    worker seeds from a private_generator. Under torchrun, `rank` of `ranks` gets its shard of each draw."""
    shard = len(dataset) // ranks
    sampler = SeededBatchSampler(len(dataset), batch_size, drop_last=shard > batch_size, rank=rank, ranks=ranks)
    loader = make_loader(SeededDataset(dataset), batch_size, runtime.num_workers, device,
                         generator=private_generator(seed), batch_sampler=sampler,
                         persistent_workers=persistent and runtime.persistent_workers)
    return loader, sampler
