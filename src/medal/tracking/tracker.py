"""Tracker: one Weights & Biases run, or nothing at all when tracking is off.

The training loop calls it at three places (start, end of an epoch's steps, end of an
epoch) and train/blend at the end of their work; every call is a no-op on a tracker
that never started. Tracking never stops the work it watches: it does not prompt for a
key, wandb.init runs under tracking.init_timeout, and a failed online start falls back
to offline (and a failed offline one to no tracking), each with a warning.
"""
from __future__ import annotations

import netrc
import os
from numbers import Real
from pathlib import Path
from types import TracebackType
from urllib.parse import urlparse

from medal.core.config import Config, TrackingConfig
from medal.core.log import get_logger

KEY_VARIABLE = "WANDB_API_KEY"


def wandb_dir(cfg: Config) -> Path:
    """Where the runs' local files go: <output_dir>/<competition>/wandb (wandb adds the last part)."""
    return cfg.data_dir / "wandb"


def api_key() -> str | None:
    """A W&B API key from WANDB_API_KEY, the netrc entry `wandb login` writes, or a Kaggle secret
    named WANDB_API_KEY; None when there is none (nothing is asked)."""
    if os.environ.get(KEY_VARIABLE):
        return os.environ[KEY_VARIABLE]
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        entry = netrc.netrc().authenticators(host)
    except (OSError, netrc.NetrcParseError):
        entry = None
    if entry and entry[2]:
        return entry[2]
    if os.environ.get("KAGGLE_KERNEL_RUN_TYPE"):  # inside a Kaggle kernel: secrets are attached per notebook
        try:
            from kaggle_secrets import UserSecretsClient
            return UserSecretsClient().get_secret(KEY_VARIABLE) or None
        except Exception:  # noqa: BLE001  not attached, or the secrets service is unreachable: both mean no key
            return None
    return None


def resolve_mode(t: TrackingConfig, folder: Path) -> tuple[str, str | None]:
    """(mode, key) a run starts with. tracking.mode wins; under auto, WANDB_MODE when set, else online when a
    key is found. Online without a key becomes offline, with a warning naming how to upload later."""
    mode = t.mode if t.mode != "auto" else os.environ.get("WANDB_MODE", "auto")
    mode = {"dryrun": "offline", "run": "online"}.get(mode, mode)  # wandb's older spellings
    if mode in ("offline", "disabled"):
        return mode, None
    key = api_key()
    if key is None:
        get_logger().warning("W&B: no API key (%s, a Kaggle secret of that name, or `wandb login`): logging offline "
                             "under %s; upload later with `wandb sync %s/offline-run-*`", KEY_VARIABLE, folder, folder)
        return "offline", None
    return "online", key


class Tracker:
    """One W&B run: `start` it, log steps, epochs, images, files and a summary, `finish` it (or leave it as a
    context manager). Built with cfg.tracking.wandb false (or mode disabled) it never starts and never
    imports wandb."""

    def __init__(self, cfg: Config | None, name: str, group: str, job_type: str, config: dict | None = None) -> None:
        self.cfg, self.name, self.group, self.job_type, self.config = cfg, name, group, job_type, config
        self.run = None

    @classmethod
    def off(cls) -> Tracker:
        """A tracker that never starts, for code run outside a stage (tests, lr-find)."""
        return cls(None, "", "", "")

    def start(self, run_id: str | None = None) -> None:
        """Start (or, with the id of an earlier run, continue) the run, when tracking is on."""
        if self.cfg is None or not self.cfg.tracking.wandb or self.run is not None:
            return
        t = self.cfg.tracking
        folder = wandb_dir(self.cfg)
        mode, key = resolve_mode(t, folder)
        if mode == "disabled":
            return
        folder.mkdir(parents=True, exist_ok=True)
        self.run = self._init(mode, key, run_id, folder)
        if self.run is None and mode == "online":
            self.run = self._init("offline", None, run_id, folder)
        if self.run is not None:
            self.run.define_metric("global_step")
            self.run.define_metric("train/*", step_metric="global_step")
            self.run.define_metric("epoch")
            self.run.define_metric("epoch/*", step_metric="epoch")
            get_logger().info("W&B run %s (%s, %s) %s", self.name, self.run.id, self.run.settings.mode,
                              f"at {self.run.url}" if self.run.settings.mode == "online" else f"under {Path(self.run.dir).parent}")

    def _init(self, mode: str, key: str | None, run_id: str | None, folder: Path):
        """wandb.init under the timeout; None, with a warning, when it fails."""
        wandb = _wandb()
        t = self.cfg.tracking
        try:
            return wandb.init(
                project=t.project or f"medal-{self.cfg.data.competition}", entity=t.entity, name=self.name,
                group=self.group, job_type=self.job_type, tags=t.tags,
                config=self.config if self.config is not None else self.cfg.model_dump(mode="json"), id=run_id,
                resume="allow" if run_id else None, dir=str(folder.parent), mode=mode,
                # console off: medal's own log is the record, and wrapping stdout fights tqdm and pytest.
                settings=wandb.Settings(init_timeout=t.init_timeout, silent=True, console="off", api_key=key))
        except Exception as error:  # noqa: BLE001  a timeout, a refused key, no network: the work goes on without them
            fallback = "logging offline instead" if mode == "online" else "not tracking this run"
            get_logger().warning("W&B: %s start of run %s failed (%s); %s", mode, self.name,
                                 str(error).splitlines()[0] if str(error) else type(error).__name__, fallback)
            if mode == "online":
                wandb.teardown()  # wandb's service still holds the failed run's id; a fresh one lets offline reuse it
            return None

    def log_steps(self, rows: list[dict], first: int) -> None:
        """Per-step rows (loss, LRs, ...) as train/<key>, against global_step = first, first + 1, ..."""
        if self.run is None:
            return
        for index, row in enumerate(rows, start=first):
            self.run.log({"global_step": index, **{f"train/{k}": v for k, v in _numbers(row).items() if k != "step"}})

    def log_epoch(self, row: dict) -> None:
        """A metrics.csv row as epoch/<key>, against its epoch (from 1: the epochs done, as the log counts)."""
        if self.run is None:
            return
        self.run.log({"epoch": row["epoch"], **{f"epoch/{k}": v for k, v in _numbers(row).items() if k != "epoch"}})

    def log_images(self, images: dict[str, Path]) -> None:
        """PNG files under their keys; files that were not written (a report turned off) are left out."""
        if self.run is None:
            return
        wandb = _wandb()
        present = {key: wandb.Image(str(path)) for key, path in images.items() if path.is_file()}
        if present:
            self.run.log(present)

    def log_files(self, name: str, kind: str, paths: list[Path]) -> None:
        """Files (an OOF table, a report) as one versioned artifact."""
        if self.run is None:
            return
        wandb = _wandb()
        artifact = wandb.Artifact(name, type=kind)
        for path in paths:
            artifact.add_file(str(path))
        self.run.log_artifact(artifact)

    def summarise(self, values: dict) -> None:
        if self.run is not None:
            self.run.summary.update(values)

    def finish(self, failed: bool = False) -> None:
        if self.run is not None:
            self.run.finish(exit_code=1 if failed else 0)
            self.run = None

    def __enter__(self) -> Tracker:  # noqa: PYI034  (typing.Self needs Python 3.11)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.finish(failed=error is not None)


def fold_tracker(cfg: Config, fold: int) -> Tracker:
    """The tracker of one fold's training: run <exp>-fold<k> in group <exp>; the trainer starts it with its run id."""
    return Tracker(cfg, f"{cfg.name}-fold{fold}", cfg.name, "train", {**cfg.model_dump(mode="json"), "fold": fold})


def _wandb():
    """wandb, imported on first use (so that untracked runs never load it)."""
    try:
        import wandb
    except ImportError as error:
        raise ImportError("tracking.wandb is true but wandb is not installed: `pip install 'wandb>=0.16,<1'` "
                          "(scripts/setup.sh installs it), or set tracking.wandb=false") from error
    return wandb


def _numbers(row: dict) -> dict:
    """The numeric entries of a row (W&B charts numbers; a label like 'chosen' would be noise)."""
    return {k: v for k, v in row.items() if isinstance(v, Real) and not isinstance(v, bool)}
