"""Weight averaging of one fold: SWA over the last epochs, and the average of the top-k epochs' weights.

Both go through torch.optim.swa_utils: an AveragedModel keeps the running mean of the weights it is given
(SWA: the raw weights at the end of each of the last `swa_epochs` epochs; top-k: the k epoch snapshots that
validated best), and `update_bn` recomputes the BatchNorm statistics of the averaged weights with one pass
over the training images, since the running statistics of the sources do not average into those of the mean.

Top-k snapshots live on disk beside last.pt (fold<k>/top_k/epoch<e>.pt), so memory holds one model copy per
average whatever k is, and a resumed fold still finds them. The running SWA average travels in last.pt.
"""
from __future__ import annotations

import copy
import shutil
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel, update_bn
from torch.utils.data import DataLoader

from medal.core.config import AverageConfig
from medal.core.io import atomic_path
from medal.core.log import get_logger
from medal.core.metrics import higher_is_better, is_better


class WeightAverages:
    """The fold's SWA average and top-k snapshots, fed once per epoch; `averaged()` builds the final models."""

    NAMES = ("swa", "top_k")  # the averages, as averaged() names them and train.average.oof chooses them

    def __init__(self, settings: AverageConfig, total_epochs: int, metric: str, folder: Path, main: bool = True) -> None:
        self.settings, self.total_epochs, self.metric = settings, total_epochs, metric
        self.folder = folder / "top_k"
        self.main = main  # under torchrun rank 0 alone writes the snapshots; every rank reads them
        self.swa: AveragedModel | None = None
        self.swa_epochs: list[int] = []
        self.top: list[tuple[float, int]] = []  # (score, epoch from 1), best first

    @property
    def enabled(self) -> bool:
        return bool(self.settings.swa_epochs or self.settings.top_k)

    def swa_starts(self) -> int:
        """The first epoch (from 1) whose weights enter the SWA average."""
        return max(1, self.total_epochs - self.settings.swa_epochs + 1)

    def after_epoch(self, epoch: int, raw: torch.nn.Module, chosen: torch.nn.Module, score: float) -> None:
        """Epoch `epoch` (from 1) is done: `raw` enters SWA in its window; `chosen` (the weights best.pt would
        take this epoch) with its validation `score` enters the top-k when it ranks among the k best."""
        if self.settings.swa_epochs and epoch >= self.swa_starts():
            if self.swa is None:
                self.swa = AveragedModel(raw, use_buffers=False)  # buffers (BN statistics) are recomputed instead
            self.swa.update_parameters(raw)
            self.swa_epochs.append(epoch)
        k = self.settings.top_k
        if not k:
            return
        worst = self.top[-1][0] if len(self.top) == k else None
        if worst is not None and not is_better(self.metric, score, worst):
            return
        if self.main:
            with atomic_path(self._snapshot(epoch)) as tmp:
                torch.save(chosen.state_dict(), tmp)
        self.top.append((score, epoch))
        self.top.sort(key=lambda item: item[0], reverse=higher_is_better(self.metric))  # stable: ties keep the earlier epoch
        for _, dropped in self.top[k:]:
            if self.main:
                self._snapshot(dropped).unlink(missing_ok=True)
        del self.top[k:]

    def averaged(self, model: torch.nn.Module, loader: DataLoader, device: torch.device) -> dict[str, torch.nn.Module]:
        """The averaged models by name ('swa', 'top_k'), each with BatchNorm statistics recomputed on `loader`;
        an average with no source (SWA's window never reached: an early stop) is left out, with a warning."""
        found: dict[str, torch.nn.Module] = {}
        if self.settings.swa_epochs:
            if self.swa is None:
                get_logger().warning("SWA averaged nothing: training stopped before epoch %d, where its window "
                                     "starts", self.swa_starts())
            else:
                found["swa"] = self.swa.module
        if self.settings.top_k and self.top:
            average = AveragedModel(model, use_buffers=False)
            source = copy.deepcopy(model)
            for _, epoch in self.top:
                source.load_state_dict(torch.load(self._snapshot(epoch), map_location=device, weights_only=True))
                average.update_parameters(source)
            found["top_k"] = average.module
        for averaged in found.values():
            update_bn(loader, averaged, device)
        return found

    def describe(self) -> dict:
        """Which epochs each average holds, for done.json."""
        return {"swa_epochs": self.swa_epochs, "top_k_epochs": sorted(epoch for _, epoch in self.top)}

    def state_dict(self) -> dict:
        return {"swa": self.swa.state_dict() if self.swa is not None else None, "swa_epochs": self.swa_epochs,
                "top": [[score, epoch] for score, epoch in self.top]}

    def load_state_dict(self, state: dict | None, model: torch.nn.Module) -> None:
        if not state:
            return
        if state["swa"] is not None:
            self.swa = AveragedModel(model, use_buffers=False)
            self.swa.load_state_dict(state["swa"])
        self.swa_epochs = list(state["swa_epochs"])
        self.top = [(float(score), int(epoch)) for score, epoch in state["top"]]

    def discard_snapshots(self) -> None:
        """Delete the top-k snapshots once the fold's files are written (the average is in best.pt or scored)."""
        if self.main and self.folder.is_dir():
            shutil.rmtree(self.folder)

    def _snapshot(self, epoch: int) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        return self.folder / f"epoch{epoch}.pt"
