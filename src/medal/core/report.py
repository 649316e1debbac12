"""The one report writer: a report is a list of blocks (headings, paragraphs, tables, bullet lists, images) that a
stage fills in, rendered here to Markdown. The blocks are plain data, so another renderer (an HTML page) can walk
the same list instead of every stage writing its own."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import pandas as pd


@dataclass
class Document:
    title: str
    blocks: list[tuple[str, object]] = field(default_factory=list)

    def heading(self, text: str) -> Document:
        self.blocks.append(("heading", text))
        return self

    def text(self, *lines: str) -> Document:
        """A paragraph; each line is kept on its own line (Markdown joins them)."""
        self.blocks.append(("text", list(lines)))
        return self

    def table(self, frame: pd.DataFrame, index: bool = True) -> Document:
        """A table of `frame`; floats shown to 4 decimals; the index becomes the first column when `index`."""
        self.blocks.append(("table", (frame, index)))
        return self

    def bullets(self, items: Iterable[str]) -> Document:
        """A bullet list; none when `items` is empty."""
        items = list(items)
        if items:
            self.blocks.append(("bullets", items))
        return self

    def image(self, path: str, alt: str) -> Document:
        """An image beside the report file (a relative path)."""
        self.blocks.append(("image", (path, alt)))
        return self

    def markdown(self) -> str:
        parts = [f"# {self.title}"]
        for kind, value in self.blocks:
            if kind == "heading":
                parts.append(f"## {value}")
            elif kind == "text":
                parts.append("\n".join(value))
            elif kind == "table":
                parts.append(markdown_table(*value))
            elif kind == "bullets":
                parts.append("\n".join(f"- {item}" for item in value))
            elif kind == "image":
                path, alt = value
                parts.append(f"![{alt}]({path})")
        return "\n\n".join(parts) + "\n"


def markdown_table(frame: pd.DataFrame, index: bool = True) -> str:
    """A GitHub Markdown table (pandas' to_markdown needs the optional `tabulate`)."""
    header = ([str(frame.index.name or "")] if index else []) + [str(c) for c in frame.columns]
    rows = [([str(i)] if index else []) + [_cell(v) for v in row] for i, row in zip(frame.index, frame.itertuples(index=False))]
    return "\n".join([_row(header), "|---" * len(header) + "|", *map(_row, rows)])


def _row(cells: list[str]) -> str:
    return "|" + "|".join(f" {c} " if c else " " for c in cells) + "|"


def _cell(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, (float, np.floating)) else str(value)
