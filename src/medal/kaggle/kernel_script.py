"""A Kaggle kernel written by `medal kaggle pack`: offline, it installs medal from the packed dataset, predicts the
competition's test set with the packed experiments (`medal infer --test-only`, each with the TTA views and fold
models chosen on OOF before packing), blends them (`medal blend`) and writes /kaggle/working/submission.csv.

Standalone: it runs before medal is installed, so it imports nothing of medal. MEDAL_KAGGLE_ROOT replaces
/kaggle, to try the kernel in a local copy of Kaggle's layout.
"""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

DATASET = ""  # the packed dataset's slug, written in by `medal kaggle pack`
PACK_FILE = "medal-pack.json"
ROOT = Path(os.environ.get("MEDAL_KAGGLE_ROOT", "/kaggle"))
INPUT, WORKING, TEMP = ROOT / "input", ROOT / "working", ROOT / "temp"


def find_pack() -> Path:
    """The attached dataset that holds medal-pack.json (Kaggle mounts datasets at input/<slug>, or deeper)."""
    found = [p.parent for depth in ("*", "*/*", "*/*/*") for p in INPUT.glob(f"{depth}/{PACK_FILE}")]
    mine = [p for p in found if json.loads((p / PACK_FILE).read_text()).get("dataset") == DATASET]
    if len(mine) != 1:
        sys.exit(f"medal kernel: expected one dataset {DATASET!r} with {PACK_FILE} under {INPUT}, found "
                 f"{[str(p) for p in found]}: add the packed dataset to the kernel's inputs")
    return mine[0]


def install(pack_dir: Path, pack: dict) -> Path:
    """The packed wheels, installed offline into a scratch folder that the medal commands put first on their
    path. --no-deps: the Kaggle image brings torch, timm and the rest, and nothing of it is replaced."""
    site = TEMP / "medal-site"
    shutil.rmtree(site, ignore_errors=True)
    wheels = [str(pack_dir / name) for name in pack["wheels"]]
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--quiet",
                    "--disable-pip-version-check", "--target", str(site), *wheels], check=True)
    return site


def unpack_tree(pack_dir: Path, pack: dict) -> None:
    """The experiments' output tree, into working/ (input/ is read-only, and infer rewrites test_pred.csv).
    Kaggle may have unpacked the zip into a folder of the same name; either is read."""
    tree, dest = pack_dir / pack["tree"], WORKING / pack["output_dir"]
    shutil.rmtree(dest, ignore_errors=True)
    if tree.is_dir():
        shutil.copytree(tree, dest)
    else:
        with zipfile.ZipFile(tree) as archive:
            archive.extractall(dest)


def main() -> None:
    pack_dir = find_pack()
    pack = json.loads((pack_dir / PACK_FILE).read_text())
    for folder in (WORKING, TEMP):
        folder.mkdir(parents=True, exist_ok=True)
    site = install(pack_dir, pack)
    unpack_tree(pack_dir, pack)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
           "TMPDIR": str(TEMP), "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1"}
    env.setdefault("KAGGLE_KERNEL_RUN_TYPE", "Batch")  # set by Kaggle; medal reads paths the kernel way under it

    def medal(*args: str) -> None:
        print("+ medal", *args, flush=True)
        subprocess.run([sys.executable, "-m", "medal", *args], env=env, check=True, cwd=WORKING)

    subprocess.run([sys.executable, "-c", "import medal; print('medal from', medal.__file__)"], env=env, check=True)
    for experiment in pack["experiments"]:
        medal("infer", "--test-only", "-c", str(pack_dir / experiment["config"]))
    blend = pack["blend"]
    medal("blend", "-c", str(pack_dir / blend["config"]), "--name", blend["name"], *blend["experiments"])
    submission = WORKING / "submission.csv"
    shutil.copyfile(WORKING / pack["submission"], submission)
    medal("check-submission", str(submission), "-c", str(pack_dir / blend["config"]))
    print(f"wrote {submission}")


if __name__ == "__main__":
    main()
