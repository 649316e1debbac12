"""The short runs that log a finished result in one go: an experiment's CV and a blend."""
from __future__ import annotations

from pathlib import Path

from medal.core.config import Config
from medal.tracking.tracker import Tracker


def track_cv(cfg: Config, oof_csv: Path, summary: dict) -> None:
    """Run <exp>-cv in the experiment's group: the CV summary (cv.json) and the full OOF table as an artifact."""
    with Tracker(cfg, f"{cfg.name}-cv", cfg.name, "train") as tracking:
        tracking.start()
        tracking.summarise(summary)
        tracking.log_files(f"{cfg.name}-oof", "oof", [oof_csv])


def track_blend(cfg: Config, name: str, report: dict, folder: Path) -> None:
    """Run blend-<name> of its own: the chosen method, weights and CVs, the correlation heatmap, and the report
    folder's blend.json and report.md as an artifact."""
    with Tracker(cfg, f"blend-{name}", f"blend-{name}", "blend") as tracking:
        tracking.start()
        tracking.summarise({k: report[k] for k in ("metric", "method", "members", "weights", "blend_cv",
                                                   "blend_in_sample", "cv", "submission")})
        tracking.log_images({"correlation": folder / "correlation.png"})
        tracking.log_files(f"blend-{name}-report", "blend-report", [folder / "blend.json", folder / "report.md"])
