"""Read an offline W&B run back from its folder, as `wandb sync` would upload it.

wandb (0.2x-0.3x) keeps no Python reader of its run files, so this is one: a .wandb file is a
7-byte header (":W&B", magic 0xBEE1, version 0) and then LevelDB-log blocks of 32 KiB, each
record a CRC (4 bytes), a length (2), a type (1: whole, 2/3/4: first/middle/last piece) and a
piece of a serialised wandb_internal_pb2.Record.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import wandb
from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
WHOLE, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[wandb_internal_pb2.Record]:
    data = path.read_bytes()
    assert data.startswith(HEADER), f"{path} is not a W&B run file (header {data[:7]!r})"
    out, pieces, pos = [], b"", len(HEADER)
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # a block's tail too short for a record header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:  # zero fill at the end of the last block
            break
        pieces += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (WHOLE, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pieces)
            out.append(record)
            pieces = b""
    return out


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


@dataclass
class OfflineRun:
    folder: Path
    run: wandb_internal_pb2.RunRecord
    config: dict
    history: list[dict]
    summary: dict
    artifacts: list[wandb_internal_pb2.ArtifactRecord] = field(default_factory=list)
    exit_code: int | None = None


def read_run(folder: Path) -> OfflineRun:
    """The run's settings, config, history rows, summary (the last value of each key), artifacts and exit code."""
    # run.finish() only asks wandb's service to close the run's stream and returns at once; the file is whole
    # once the service has shut down, and teardown waits for that (CI once read a file with no history yet).
    wandb.teardown()
    (path,) = folder.glob("run-*.wandb")
    run, config, history, summary, artifacts, exit_code = None, {}, [], {}, [], None
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            config.update({u.key: json.loads(u.value_json) for u in record.run.config.update})
        elif kind == "config":
            config.update({u.key: json.loads(u.value_json) for u in record.config.update})
        elif kind == "history":
            history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            summary.update({_key(u): json.loads(u.value_json) for u in record.summary.update})
        elif kind == "artifact":
            artifacts.append(record.artifact)
        elif kind == "exit":
            exit_code = record.exit.exit_code
    return OfflineRun(folder, run, config, history, summary, artifacts, exit_code)


def run_folders(wandb_dir: Path, run_id: str) -> list[Path]:
    """The offline folders of one run id, oldest first (a resumed run adds one per start)."""
    return sorted(wandb_dir.glob(f"offline-run-*-{run_id}"))
