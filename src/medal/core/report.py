"""The one report writer: a report is a list of blocks (headings, paragraphs, tables, bullet lists, images,
code) that a stage fills in, rendered here to Markdown (clean, folds, blend) or to one self-contained HTML
page (medal report): every image embedded, no script, nothing loaded from the network."""
from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass
class Document:
    title: str
    blocks: list[tuple[str, object]] = field(default_factory=list)

    def heading(self, text: str) -> Document:
        self.blocks.append(("heading", text))
        return self

    def subheading(self, text: str) -> Document:
        self.blocks.append(("subheading", text))
        return self

    def code(self, text: str) -> Document:
        """Preformatted text (a config file, a log excerpt)."""
        self.blocks.append(("code", text))
        return self

    def figure(self, png: bytes, alt: str) -> Document:
        """A PNG made for this report (not a file beside it)."""
        self.blocks.append(("figure", (png, alt)))
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
            elif kind == "subheading":
                parts.append(f"### {value}")
            elif kind == "code":
                parts.append(f"```\n{value.rstrip()}\n```")
            elif kind == "image":
                path, alt = value
                parts.append(f"![{alt}]({path})")
            elif kind == "figure":
                png, alt = value
                parts.append(f"![{alt}]({_data_uri(png)})")
        return "\n\n".join(parts) + "\n"

    def html(self, base: Path) -> str:
        """One self-contained page: `image` blocks are read from `base` and embedded; one that is missing is
        named in the page rather than left as a broken image."""
        body, contents = [], []
        for kind, value in self.blocks:
            if kind in ("heading", "subheading"):
                anchor = f"s{len(contents)}"
                contents.append((kind, anchor, value))
                tag = "h2" if kind == "heading" else "h3"
                body.append(f'<{tag} id="{anchor}">{_inline(value)}</{tag}>')
            elif kind == "text":
                body.append("<p>" + "<br>".join(_inline(line) for line in value) + "</p>")
            elif kind == "table":
                body.append(html_table(*value))
            elif kind == "bullets":
                body.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in value) + "</ul>")
            elif kind == "code":
                body.append(f"<pre>{html.escape(value)}</pre>")
            elif kind == "image":
                path, alt = value
                file = base / path
                body.append(_img(file.read_bytes(), alt) if file.is_file()
                            else f'<p class="missing">image {html.escape(str(path))} ({html.escape(alt)}) was not found</p>')
            elif kind == "figure":
                body.append(_img(*value))
        toc = "".join(f'<li class="{kind}"><a href="#{anchor}">{_inline(text)}</a></li>' for kind, anchor, text in contents)
        return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
                f'<meta name="viewport" content="width=device-width, initial-scale=1">'
                f"<title>{html.escape(self.title)}</title><style>{_STYLE}</style></head>\n<body><main>\n"
                f"<h1>{_inline(self.title)}</h1>\n" + (f'<nav><ul>{toc}</ul></nav>\n' if toc else "") + "\n".join(body) + "\n</main></body></html>\n")


def markdown_table(frame: pd.DataFrame, index: bool = True) -> str:
    """A GitHub Markdown table (pandas' to_markdown needs the optional `tabulate`)."""
    header = ([str(frame.index.name or "")] if index else []) + [str(c) for c in frame.columns]
    rows = [([str(i)] if index else []) + [_cell(v) for v in row] for i, row in zip(frame.index, frame.itertuples(index=False))]
    return "\n".join([_row(header), "|---" * len(header) + "|", *map(_row, rows)])


def _row(cells: list[str]) -> str:
    return "|" + "|".join(f" {c} " if c else " " for c in cells) + "|"


def _cell(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, (float, np.floating)) else str(value)


def html_table(frame: pd.DataFrame, index: bool = True) -> str:
    """An HTML table of `frame`, cells formatted as in Markdown; numbers right-aligned."""
    header = ([str(frame.index.name or "")] if index else []) + [str(c) for c in frame.columns]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = []
    for i, row in zip(frame.index, frame.itertuples(index=False)):
        cells = ([f"<th>{html.escape(str(i))}</th>"] if index else [])
        cells += [f'<td class="num">{_cell(v)}</td>' if isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
                  else f"<td>{_inline(_cell(v))}</td>" for v in row]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _img(png: bytes, alt: str) -> str:
    return f'<figure><img src="{_data_uri(png)}" alt="{html.escape(alt)}"><figcaption>{html.escape(alt)}</figcaption></figure>'


def _inline(text: str) -> str:
    """Escaped text with the two Markdown marks the reports use: **bold** and `code`."""
    text = html.escape(str(text))
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


_STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d1d1f;background:#fafafa;margin:0}
main{max-width:1180px;margin:0 auto;padding:16px 28px 60px;background:#fff}
h1{font-size:26px;margin:12px 0 4px}h2{font-size:20px;margin:30px 0 8px;border-bottom:2px solid #e5e5ea;padding-bottom:3px}
h3{font-size:16px;margin:20px 0 6px}
nav ul{columns:3;list-style:none;padding:8px 12px;background:#f2f2f7;border-radius:6px;font-size:13px}
nav li.subheading{padding-left:14px}a{color:#0057b8;text-decoration:none}
table{border-collapse:collapse;margin:6px 0 12px;font-size:13px}th,td{border:1px solid #d8d8de;padding:3px 8px}
thead th{background:#f2f2f7}td.num{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#f6f8fa;padding:10px;overflow:auto;font-size:12px;max-height:420px}
code{background:#f2f2f7;padding:0 3px;border-radius:3px}
figure{margin:8px 0 14px}img{max-width:100%;border:1px solid #e5e5ea}figcaption{font-size:12px;color:#6e6e73}
.missing{color:#b00020}
"""
