"""`medal kaggle pack`: the experiments, medal and a kernel, as two folders to upload with the Kaggle CLI.

dataset/ is flat, since `kaggle datasets version` skips sub-folders unless told otherwise: medal's wheel and
the wheels a Kaggle image lacks, one resolved config per experiment, medal-pack.json (the experiments, their
chosen TTA views, the blend) and outputs.zip, the output tree the kernel's infer and blend read: the provenance
closure of each experiment's infer manifest (clean's and folds' files, each fold's best.pt, oof.csv and
done.json with their manifests, oof_tta.csv, test_pred.csv, tta.json), never last.pt.
kernel/ holds kernel-metadata.json and the kernel script (medal.kaggle.kernel_script).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import yaml

import medal
from medal.core import layout, provenance
from medal.core.config import Config
from medal.core.io import atomic_path, write_json, write_text
from medal.core.log import get_logger
from medal.kaggle import kernel_script

# medal's requirements that Kaggle's GPU image does not ship; the rest (torch, timm, albumentations, opencv,
# pandas, scikit-learn, pydantic, ...) are installed there already and the kernel installs with --no-deps.
KAGGLE_MISSING = ("iterative-stratification",)
PACK_FILE = kernel_script.PACK_FILE
TREE = "outputs.zip"
OUTPUT_DIR = "outputs"
SUBMISSION_DIR = "submissions"
KERNEL_FILE = "medal_kernel.py"
# Kaggle's rule for dataset and kernel slugs: 6 to 50 of a-z, 0-9 and '-'.
SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{4,48}[a-z0-9]$")


@dataclass
class Packed:
    dataset: Path
    kernel: Path
    files: list[str]  # the dataset's files, by name


def pack(cfgs: list[Config], out: Path, *, user: str, competition: str | None = None, dataset: str | None = None,
         kernel: str | None = None, download: bool = True) -> Packed:
    """Write <out>/dataset and <out>/kernel for the experiments `cfgs` (infer must be current for each)."""
    _check_together(cfgs)
    choices = {cfg.name: _chosen_views(cfg) for cfg in cfgs}
    competition = competition or cfgs[0].data.competition
    dataset = dataset or f"medal-{competition}"
    kernel = kernel or f"medal-{competition}-kernel"
    for what, slug in (("--dataset", dataset), ("--kernel", kernel)):
        if not SLUG.match(slug):
            raise ValueError(f"{what} {slug!r} is not a Kaggle slug: 6 to 50 of a-z, 0-9 and '-'")
    dataset_dir, kernel_dir = _fresh(out / "dataset", PACK_FILE), _fresh(out / "kernel", "kernel-metadata.json")
    names = [cfg.name for cfg in cfgs]
    _write_tree(cfgs, dataset_dir / TREE)
    for cfg in cfgs:
        write_text(dataset_dir / f"{cfg.name}.yaml", packed_config(cfg, names))
    wheels = build_wheels(dataset_dir, download)
    blend_name = cfgs[0].blend.submission_name
    write_json(dataset_dir / PACK_FILE, {
        "medal": medal.__version__,
        "dataset": dataset, "competition": competition, "output_dir": OUTPUT_DIR, "tree": TREE, "wheels": wheels,
        "experiments": [{"name": cfg.name, "config": f"{cfg.name}.yaml", "tta": choices[cfg.name]["chosen"],
                         "oof_tta": choices[cfg.name]["oof_tta"], "metric": cfg.metric} for cfg in cfgs],
        "blend": {"config": f"{names[0]}.yaml", "name": blend_name, "experiments": names},
        "submission": f"{SUBMISSION_DIR}/{blend_name}.csv"})
    write_json(dataset_dir / "dataset-metadata.json", {
        "title": dataset, "id": f"{user}/{dataset}", "licenses": [{"name": "CC0-1.0"}]})
    _write_kernel(kernel_dir, user, kernel, dataset, competition)
    files = sorted(p.name for p in dataset_dir.iterdir())
    get_logger().info("packed %s into %s (%s) and a kernel into %s", ", ".join(names), dataset_dir,
                      _size(dataset_dir), kernel_dir)
    return Packed(dataset_dir, kernel_dir, files)


def _check_together(cfgs: list[Config]) -> None:
    names = [cfg.name for cfg in cfgs]
    if len(set(names)) != len(names):
        raise ValueError(f"experiments {names} name one more than once")
    folders = {str(cfg.data_dir) for cfg in cfgs}
    if len(folders) != 1:
        raise ValueError(f"the experiments write to different output trees {sorted(folders)}: a kernel blends "
                         "experiments of one competition and one output_dir")
    for cfg in cfgs:
        if cfg.data.cache_max_side > 0:
            raise ValueError(f"{cfg.name}: data.cache_max_side={cfg.data.cache_max_side} reads test images from the "
                             "resized-image cache, which holds none of a kernel's hidden test set: infer and pack "
                             "with data.cache_max_side=0")


def _chosen_views(cfg: Config) -> dict:
    """tta.json, once the infer manifest vouches for it and for everything upstream (medal.core.provenance)."""
    provenance.verify(layout.infer_manifest(cfg), f"{cfg.name!r} has no current predictions "
                      f"({layout.infer_manifest(cfg)} is missing): run `{provenance.command(cfg, 'infer')}` first", cfg)
    return json.loads(layout.tta_json(cfg).read_text())


def tree_files(cfgs: list[Config]) -> list[Path]:
    """Every file the kernel's infer and blend read: each infer manifest, its outputs, and every manifest up
    the chain with its outputs; plus each experiment's config snapshots."""
    todo = [layout.infer_manifest(cfg) for cfg in cfgs]
    files: dict[Path, None] = {}
    while todo:
        manifest = Path(os.path.normpath(todo.pop()))
        if manifest in files:
            continue
        record = provenance.read_manifest(manifest)
        files[manifest] = None
        files.update({Path(os.path.normpath(manifest.parent / e["path"])): None for e in record["outputs"].values()})
        todo += [manifest.parent / e["manifest"] for e in record["inputs"].values() if e.get("manifest")]
    for cfg in cfgs:
        files.update({p: None for p in (cfg.exp_dir / "config.yaml", cfg.exp_dir / "infer_config.yaml") if p.is_file()})
    return list(files)


def _write_tree(cfgs: list[Config], dest: Path) -> None:
    """outputs.zip: the tree relative to output_dir; checkpoints stored (they hardly compress), the rest deflated."""
    top = Path(os.path.normpath(cfgs[0].output_dir))
    with atomic_path(dest) as tmp, zipfile.ZipFile(tmp, "w") as archive:
        for path in sorted(tree_files(cfgs)):
            relative = os.path.relpath(path, top)
            if relative.startswith(".."):
                raise ValueError(f"{path} is recorded in a manifest under {top} but lies outside it: it cannot be packed")
            kind = zipfile.ZIP_STORED if path.suffix == ".pt" else zipfile.ZIP_DEFLATED
            archive.write(path, relative, compress_type=kind)


def packed_config(cfg: Config, names: list[str]) -> str:
    """The resolved config for the kernel: outputs relative (under /kaggle/working there), the competition's
    name pinned (its folder under /kaggle/input is found by sample_submission.csv), no pretrained weights (every
    weight is in best.pt) and no tracking (the kernel is offline)."""
    snap = cfg.model_dump(mode="json")
    snap["output_dir"] = OUTPUT_DIR
    snap["data"]["name"] = cfg.data.competition
    snap["blend"].update(submission_dir=SUBMISSION_DIR, experiments=names)
    snap["model"]["pretrained_file"] = None
    if "pretrained" in snap["model"]:
        snap["model"]["pretrained"] = False
    if "wandb" in snap.get("tracking", {}):
        snap["tracking"]["wandb"] = False
    header = f"# {cfg.name}, packed by `medal kaggle pack` from {cfg.source[0] or 'code'}\n"
    return header + yaml.safe_dump(snap, sort_keys=False)


def build_wheels(dest: Path, download: bool) -> list[str]:
    """medal's wheel, built from its source tree, and (when `download`) the wheels of KAGGLE_MISSING from the
    package registry; returns the wheel file names."""
    source = Path(medal.__file__).resolve().parents[2]
    if not (source / "pyproject.toml").is_file():
        raise FileNotFoundError(f"medal's source tree (pyproject.toml) is not at {source}: pack needs it to build "
                                "medal's wheel; install medal with `pip install -e .` from a checkout")
    with tempfile.TemporaryDirectory() as tmp:
        # A copy, so the build leaves nothing (build/, egg-info) in the checkout.
        copy = Path(tmp) / "medal"
        shutil.copytree(source / "src", copy / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        for name in ("pyproject.toml", "README.md", "requirements.txt"):
            shutil.copy2(source / name, copy / name)
        _pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dest), str(copy))
    if download:
        for requirement in _kaggle_missing():
            _pip("download", "--no-deps", "--only-binary=:all:", "-d", str(dest), requirement)
    return sorted(p.name for p in dest.glob("*.whl"))


def _kaggle_missing() -> list[str]:
    """KAGGLE_MISSING with the version ranges medal requires."""
    required = metadata.requires("medal") or []
    return [next((r for r in required if re.split(r"[<>=!~ ;\[]", r)[0] == name), name) for name in KAGGLE_MISSING]


def _pip(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "pip", *args, "--quiet", "--disable-pip-version-check"],
                            capture_output=True, text=True)
    if result.returncode:
        raise OSError(f"`pip {' '.join(args)}` failed: {result.stderr.strip()[-800:]}"
                      + (" (no package registry? pack with --no-download)" if args[0] == "download" else ""))


def _write_kernel(folder: Path, user: str, kernel: str, dataset: str, competition: str) -> None:
    source = Path(kernel_script.__file__).read_text()
    assert source.count('DATASET = ""') == 1, kernel_script.__file__
    write_text(folder / KERNEL_FILE, source.replace('DATASET = ""', f"DATASET = {dataset!r}"))
    write_json(folder / "kernel-metadata.json", {
        "id": f"{user}/{kernel}", "title": kernel, "code_file": KERNEL_FILE, "language": "python",
        "kernel_type": "script", "is_private": True, "enable_gpu": True, "enable_tpu": False,
        "enable_internet": False, "dataset_sources": [f"{user}/{dataset}"], "competition_sources": [competition],
        "kernel_sources": [], "model_sources": []})


def _fresh(folder: Path, marker: str) -> Path:
    """`folder`, emptied if an earlier pack wrote it (it holds `marker`); any other non-empty folder is refused."""
    if folder.exists() and any(folder.iterdir()):
        if not (folder / marker).is_file():
            raise FileExistsError(f"{folder} exists and was not written by `medal kaggle pack` (no {marker}): "
                                  "choose another --out")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _size(folder: Path) -> str:
    total = sum(p.stat().st_size for p in folder.iterdir())
    return f"{total / 2**20:.1f} MiB"
