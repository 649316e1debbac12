"""Run every benchmark and write BENCHMARKS.md at the repository root.

Each benchmark runs as its own process (`python benchmarks/<script>.py ARGS`, from the repository root),
so that its max RSS is its own; its printed table goes into BENCHMARKS.md verbatim, beside the exact
command that made it, its wall time, exit status and the peak RSS of its largest process (measured here,
by wait4, whatever the script prints). The header records the date (UTC), the CPU, the core count and the
library versions. Speed figures are ratios taken within one run of one script.

  clean     images/s of `medal clean` on flowers and hymenoptera   benchmarks/clean_speed.py
  train     the training loop against the bare model step          benchmarks/train_speed.py
  infer     images/s with 1, 2 and 8 TTA views                      benchmarks/infer_speed.py
  blend     Caruana over 50 models x 100,000 rows                   benchmarks/blend_speed.py
  accuracy  medal against its peers, on flowers and imagenette      benchmarks/accuracy.py (~45 min each)

A failed benchmark is recorded (exit status and the tail of its stderr) and the others still run; the
exit status is then 1. The accuracy rows of an earlier run can be included without rerunning them:
--accuracy-from DIR reads DIR/accuracy_<dataset>.json (a list of row dicts; every key becomes a column)
and the .md beside it, in DIR or one folder below (DIR/<dataset>/, where this script puts them).

    python3 benchmarks/run_all.py                                   # everything (about 2 hours on 2 cores)
    python3 benchmarks/run_all.py --skip accuracy --quick           # the speed benchmarks, small settings
    python3 benchmarks/run_all.py --accuracy-from /tmp/medal_benchmarks/accuracy
    python3 benchmarks/run_all.py --only train --args "train=--rounds 5 --workers 2"
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
NAMES = ("clean", "train", "infer", "blend", "accuracy")
SCRIPTS = {"clean": "clean_speed.py", "train": "train_speed.py", "infer": "infer_speed.py",
           "blend": "blend_speed.py", "accuracy": "accuracy.py"}
TITLES = {
    "clean": "clean: images/s of `medal clean` on flowers and hymenoptera",
    "train": "train: the training loop against the bare model step",
    "infer": "infer: images/s with 1, 2 and 8 TTA views",
    "blend": "blend: Caruana over 50 models x 100,000 rows",
    "accuracy": "accuracy: medal against its peers",
}
# --quick: settings that finish in minutes on a loaded 2-core machine; the figures are noisier.
QUICK = {
    "clean": ["--repeats", "1"],
    "train": ["--rounds", "1"],
    "infer": ["--rounds", "2", "--images", "256"],
    "blend": ["--iters", "20"],
    "accuracy": [],
}
LIBRARIES = ("torch", "torchvision", "timm", "albumentations", "numpy", "scikit-learn", "pandas",
             "opencv-python-headless", "opencv-python", "Pillow", "medal")
STDERR_TAIL = 40


@dataclass
class Result:
    name: str
    title: str
    command: str
    returncode: int | None = None  # None: not run (the figures were read from files)
    seconds: float = 0.0
    peak_rss_mib: float = 0.0
    stdout: str = ""
    stderr: str = ""
    body: list[str] = field(default_factory=list)  # extra markdown after the output (accuracy's tables)
    note: str = ""
    failed: bool = False


def display(argv: list[str]) -> str:
    """The command as a person types it from the repository root."""
    return shlex.join(["python3", *argv])


def run(name: str, argv: list[str], timeout: float | None) -> Result:
    """Run `python argv` from the repository root, its stdout echoed as it comes; wall time, exit status
    and the peak RSS of the largest process of its tree (wait4's rusage of the child)."""
    title = TITLES[name]
    print(f"\n=== {name}: {display(argv)}", flush=True)
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *argv], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    out, err = [], []

    def pump(stream, into: list[str], echo) -> None:
        for line in stream:
            into.append(line)
            if echo is not None:
                echo.write(line)
                echo.flush()

    readers = [threading.Thread(target=pump, args=(proc.stdout, out, sys.stdout), daemon=True),
               threading.Thread(target=pump, args=(proc.stderr, err, None), daemon=True)]
    for reader in readers:
        reader.start()
    timed_out = False
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if timeout and time.perf_counter() - started > timeout:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: the script and its workers
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.2)
    except BaseException:  # Ctrl-C reaches run_all only (the benchmark has its own session): stop it too
        os.killpg(proc.pid, signal.SIGKILL)
        os.wait4(proc.pid, 0)
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    for reader in readers:
        reader.join(timeout=10)
    seconds = time.perf_counter() - started
    result = Result(name, title, display(argv), proc.returncode, seconds, usage.ru_maxrss / 1024,
                    "".join(out), "".join(err))
    if timed_out:
        result.note = f"killed after the --timeout of {timeout:.0f} s"
    result.failed = timed_out or proc.returncode != 0
    state = "FAILED" if result.failed else "ok"
    print(f"=== {name}: {state} in {seconds:.0f} s, peak RSS {result.peak_rss_mib:.0f} MiB", flush=True)
    return result


def find_accuracy(folder: Path, dataset: str) -> Path | None:
    """DIR/accuracy_<dataset>.json or DIR/<anything>/accuracy_<dataset>.json, the newest if several."""
    found = [folder / f"accuracy_{dataset}.json", *sorted(folder.glob(f"*/accuracy_{dataset}.json"))]
    found = [p for p in found if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def cell(value) -> str:
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, (dict, list)):
        text = json.dumps(value)
    else:
        text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def rows_table(rows: list[dict]) -> list[str]:
    """A markdown table of row dicts: every key a column, in first-seen order."""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(cell(row.get(k)) for k in keys) + " |" for row in rows]
    return lines


def blank_before_tables(lines: list[str]) -> list[str]:
    """A blank line before each table that follows text directly (a table cannot interrupt a paragraph)."""
    out: list[str] = []
    for line in lines:
        if line.startswith("|") and out and out[-1].strip() and not out[-1].startswith("|"):
            out.append("")
        out.append(line)
    return out


def accuracy_body(path: Path) -> list[str]:
    """The rows of accuracy_<dataset>.json as a table, then the .md accuracy.py wrote beside it, as it is."""
    data = json.loads(path.read_text())
    rows = data if isinstance(data, list) else data.get("rows", [data])
    written = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [f"Rows of `{path}` (written {written}), every field:", "", *rows_table(rows), ""]
    md = path.with_suffix(".md")
    if md.is_file():
        body += [f"As accuracy.py wrote it (`{md}`):", "", *blank_before_tables(md.read_text().rstrip().splitlines()), ""]
    return body


def accuracy_argv(dataset: str, out: Path) -> list[str]:
    return ["benchmarks/accuracy.py", "--dataset", dataset, "--out", str(out)]


def accuracy_from(folder: Path, dataset: str) -> Result:
    path = find_accuracy(folder, dataset)
    out = path.parent if path else folder / dataset
    command = out / "command.txt"  # written by accuracy.py: the exact command, flags included
    shown = command.read_text().strip() if command.is_file() else display(accuracy_argv(dataset, out))
    result = Result("accuracy", f"{TITLES['accuracy']}: {dataset}", shown)
    if path is None:
        result.failed = True
        result.note = f"no accuracy_{dataset}.json in {folder} or one folder below: not run, not found"
        return result
    result.note = "not rerun by this run: the figures are the files below, from the command above"
    try:
        result.body = accuracy_body(path)
    except (OSError, ValueError, AttributeError) as error:
        result.failed = True
        result.note = f"{path} could not be read: {error}"
    return result


def accuracy_run(dataset: str, base: Path, timeout: float | None, extra: list[str]) -> Result:
    out = base / dataset  # one folder per dataset: accuracy.py keeps peer results in OUT/peers
    result = run("accuracy", accuracy_argv(dataset, out) + extra, timeout)
    result.title = f"{TITLES['accuracy']}: {dataset}"
    json_path = out / f"accuracy_{dataset}.json"
    if not result.failed:
        if json_path.is_file():
            result.body = accuracy_body(json_path)
        else:
            result.failed, result.note = True, f"{json_path} was not written"
    return result


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2 ** 20:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
        return commit + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def gpus() -> str:
    """NVIDIA GPUs as the driver lists them (no torch import), or none."""
    found = []
    for info in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        try:
            found += [line.split(":", 1)[1].strip() for line in info.read_text().splitlines()
                      if line.startswith("Model:")]
        except OSError:
            pass
    return ", ".join(found) or "none"


def versions() -> str:
    found = [f"Python {platform.python_version()}"]
    for name in LIBRARIES:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    return ", ".join(found)


def header(started: dt.datetime, argv: list[str], load: float) -> list[str]:
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    return [
        "# Benchmarks",
        "",
        (f"Written by `{display(['benchmarks/run_all.py', *argv])}`; every figure below is printed beside the "
        "command that made it (run from the repository root). Speed figures are ratios taken within one run "
        "of one script, so that other load on the machine hits both sides of a ratio alike."),
        "",
        f"- date: {started:%Y-%m-%d %H:%M} UTC",
        (f"- CPU: {cpu_model()}; `os.cpu_count()` {os.cpu_count()}, {affinity} usable by this process "
        f"(`os.sched_getaffinity`); memory {memory_gib()}; load average {load:.2f} at the start"),
        f"- system: {platform.system()} {platform.release()} ({platform.machine()})",
        f"- versions: {versions()}",
        f"- medal commit: {git_commit()}",
        f"- GPU: {gpus()}; the speed benchmarks run on the CPU (runtime.device=cpu)",
        "",
    ]


def section(result: Result) -> list[str]:
    lines = [f"## {result.title}", "", "```sh", result.command, "```", ""]
    if result.returncode is not None:
        status = "ok" if not result.failed else f"FAILED (exit status {result.returncode})"
        lines += [(f"{status}; wall {result.seconds:.0f} s; peak RSS of its largest process "
                  f"{result.peak_rss_mib:.0f} MiB (wait4)"), ""]
    if result.note:
        lines += [f"**{result.note}**" if result.failed else result.note, ""]
    if result.stdout.strip() and not result.body:
        lines += ["```text", result.stdout.rstrip(), "```", ""]
    elif result.stdout.strip():  # accuracy: its tables come from its files, its progress lines folded away
        lines += ["<details><summary>printed output</summary>", "", "```text", result.stdout.rstrip(), "```",
                  "", "</details>", ""]
    lines += result.body
    if result.failed and result.stderr.strip():
        tail = result.stderr.rstrip().splitlines()[-STDERR_TAIL:]
        lines += [f"stderr (last {len(tail)} lines):", "", "```text", *tail, "```", ""]
    return lines


def write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def names(text: str | None) -> list[str]:
    chosen = [n.strip() for n in (text or "").split(",") if n.strip()]
    unknown = [n for n in chosen if n not in NAMES]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {', '.join(unknown)}: choose from {', '.join(NAMES)}")
    return chosen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help=f"comma list of benchmarks to run ({','.join(NAMES)}); default all")
    parser.add_argument("--skip", help="comma list of benchmarks not to run")
    parser.add_argument("--quick", action="store_true",
                        help="small settings (fewer rounds, repeats and steps): minutes, noisier figures")
    parser.add_argument("--args", action="append", default=[], metavar="NAME=ARGS",
                        help="extra arguments for one benchmark, e.g. 'train=--rounds 5' (after --quick's)")
    parser.add_argument("--accuracy-datasets", default="flowers,imagenette")
    parser.add_argument("--accuracy-out", type=Path, default=Path("/tmp/medal_benchmarks/accuracy"),
                        help="accuracy.py's work folders, one per dataset (DIR/<dataset>)")
    parser.add_argument("--accuracy-from", type=Path, default=None, metavar="DIR",
                        help="include accuracy_<dataset>.json (and .md) from DIR or DIR/*/ instead of running "
                             "accuracy.py (whatever --only and --skip say)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds allowed to each benchmark process")
    parser.add_argument("--output", type=Path, default=REPO / "BENCHMARKS.md")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the running benchmark too (see run)

    chosen = names(args.only) or list(NAMES)
    skipped = set(names(args.skip))
    chosen = [n for n in chosen if n not in skipped]
    if args.accuracy_from is not None and "accuracy" not in chosen:
        chosen.append("accuracy")  # --accuracy-from includes the files whatever --only and --skip say: nothing reruns
    extra: dict[str, list[str]] = {}
    for item in args.args:
        name, sep, rest = item.partition("=")
        if not sep or name not in NAMES:
            raise SystemExit(f"--args {item!r}: expected NAME=ARGS with NAME one of {', '.join(NAMES)}")
        extra.setdefault(name, []).extend(shlex.split(rest))

    args.output = args.output.resolve()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.timezone.utc)
    load = os.getloadavg()[0]
    results: list[Result] = []

    def write(done: bool) -> list[str]:
        """BENCHMARKS.md as it stands, written atomically; rewritten after every benchmark, so that an
        interrupted run keeps what it measured. The names of the failed benchmarks."""
        lines = header(started, sys.argv[1:], load)
        not_run = [n for n in NAMES if n not in chosen]
        if not_run:
            lines += [f"Not run this time: {', '.join(not_run)}.", ""]
        failed = [r.name + (f" ({r.title.split(': ')[-1]})" if r.name == "accuracy" else "")
                  for r in results if r.failed]
        if failed:
            lines += [f"**Failed: {', '.join(failed)}** (see each section).", ""]
        if not done:
            lines += [("**This run is still going (or was interrupted): the sections below are the benchmarks "
                       "finished so far.**"), ""]
        for result in results:
            lines += section(result)
        total = (dt.datetime.now(dt.timezone.utc) - started).total_seconds()
        if done:
            lines += [f"All of the above took {total / 60:.1f} min.", ""]
        write_atomic(args.output, "\n".join(lines))
        return failed

    for name in NAMES:
        if name not in chosen:
            continue
        more = (QUICK[name] if args.quick else []) + extra.get(name, [])
        datasets = [d.strip() for d in args.accuracy_datasets.split(",") if d.strip()] if name == "accuracy" else [""]
        for dataset in datasets:
            argv = accuracy_argv(dataset, args.accuracy_out / dataset) if dataset else [f"benchmarks/{SCRIPTS[name]}"]
            try:
                if not dataset:
                    results.append(run(name, [*argv, *more], args.timeout))
                elif args.accuracy_from is not None:
                    results.append(accuracy_from(args.accuracy_from, dataset))
                else:
                    results.append(accuracy_run(dataset, args.accuracy_out, args.timeout, more))
            except Exception as error:  # noqa: BLE001  (recorded; the other benchmarks still run)
                title = f"{TITLES[name]}: {dataset}" if dataset else TITLES[name]
                results.append(Result(name, title, display([*argv, *more]), failed=True,
                                      note=f"run_all could not run it: {type(error).__name__}: {error}"))
            write(done=False)
    failed = write(done=True)
    print(f"\nwrote {args.output}" + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
