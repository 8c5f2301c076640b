"""A tiny document model written out twice: as Markdown and as static HTML.

The compare report is built once as a list of blocks (headings, paragraphs, code, tables,
rows of images or audio clips) so report.md and report.html can never disagree. Paths are
relative to the report's folder, so the folder can be moved or served as it is.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from pathlib import Path

from darm.files import atomic_write_text


@dataclass
class Doc:
    title: str
    blocks: list[tuple] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("heading", level, text))

    def para(self, text: str) -> None:
        """A paragraph; `backticks` mark code."""
        self.blocks.append(("para", text))

    def code(self, text: str) -> None:
        self.blocks.append(("code", text))

    def table(self, header: list[str], rows: list[list[str]], align: str | None = None) -> None:
        """align: one of l / r per column (default: first left, the rest right)."""
        align = align or "l" + "r" * (len(header) - 1)
        self.blocks.append(("table", header, rows, align))

    def images(self, items: list[tuple[str, str]], width: int | None = None) -> None:
        """A row of (caption, relative path) pictures, side by side."""
        self.blocks.append(("images", items, width))

    def audio(self, items: list[tuple[str, str]]) -> None:
        """(caption, relative path) WAV files: links in Markdown, players in HTML."""
        self.blocks.append(("audio", items))

    # -- Markdown --------------------------------------------------------------------------

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for block in self.blocks:
            kind = block[0]
            if kind == "heading":
                out += ["#" * block[1] + " " + block[2], ""]
            elif kind == "para":
                out += [block[1], ""]
            elif kind == "code":
                out += ["```", block[1], "```", ""]
            elif kind == "table":
                out += [*markdown_table(*block[1:]), ""]
            elif kind == "images":
                _, items, _ = block
                out += ["| " + " | ".join(c for c, _ in items) + " |"]
                out += ["| " + " | ".join("---" for _ in items) + " |"]
                out += ["| " + " | ".join(f"![{c}]({p})" for c, p in items) + " |", ""]
            elif kind == "audio":
                out += [" · ".join(f"[{c}]({p})" for c, p in block[1]), ""]
        return "\n".join(out)

    # -- HTML ------------------------------------------------------------------------------

    def html(self) -> str:
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        for block in self.blocks:
            kind = block[0]
            if kind == "heading":
                body.append(f"<h{block[1]}>{_inline(block[2])}</h{block[1]}>")
            elif kind == "para":
                body.append(f"<p>{_inline(block[1])}</p>")
            elif kind == "code":
                body.append(f"<pre><code>{html.escape(block[1])}</code></pre>")
            elif kind == "table":
                _, header, rows, align = block
                style = ['style="text-align:right"' if a == "r" else "" for a in align]
                head = "".join(f"<th {s}>{_inline(h)}</th>" for h, s in zip(header, style))
                trs = [
                    "<tr>" + "".join(f"<td {s}>{_cell(c)}</td>" for c, s in zip(r, style)) + "</tr>"
                    for r in rows
                ]
                body.append(f"<table><tr>{head}</tr>{''.join(trs)}</table>")
            elif kind == "images":
                _, items, width = block
                w = f' width="{width}"' if width else ""
                figs = "".join(
                    f'<figure><img src="{html.escape(p)}"{w} alt="{html.escape(c)}">'
                    f"<figcaption>{html.escape(c)}</figcaption></figure>"
                    for c, p in items
                )
                body.append(f'<div class="row">{figs}</div>')
            elif kind == "audio":
                clips = "".join(
                    f'<figure><audio controls src="{html.escape(p)}"></audio>'
                    f"<figcaption>{html.escape(c)}</figcaption></figure>"
                    for c, p in block[1]
                )
                body.append(f'<div class="row">{clips}</div>')
        return HTML_PAGE.format(title=html.escape(self.title), body="\n".join(body))

    def write(self, folder: Path, stem: str = "report") -> tuple[Path, Path]:
        """Atomically (re)write folder/stem.md and folder/stem.html."""
        md, page = Path(folder) / f"{stem}.md", Path(folder) / f"{stem}.html"
        atomic_write_text(md, self.markdown())
        atomic_write_text(page, self.html())
        return md, page


HTML_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; max-width: 72em; margin: 2em auto; padding: 0 1em; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; vertical-align: top; }}
pre {{ background: #f4f4f4; padding: 0.6em; overflow-x: auto; }}
.row {{ display: flex; flex-wrap: wrap; gap: 1em; }}
figure {{ margin: 0; text-align: center; }}
img {{ image-rendering: pixelated; max-width: 100%; }}
</style></head>
<body>
{body}
</body></html>
"""


def _inline(text: str) -> str:
    """Escape, then `code` spans."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _cell(text: str) -> str:
    """A table cell; newlines inside (multi-line samples) become line breaks."""
    return "<br>".join(_inline(line) for line in str(text).split("\n"))


def fmt(value, spec: str) -> str:
    """A table cell: the value formatted, or a dash where there is none."""
    return "–" if value is None else format(value, spec)


def markdown_table(header: list[str], rows: list[list[str]], align: str) -> list[str]:
    """The lines of a Markdown table; align: l / r per column."""
    rule = ["---:" if a == "r" else "---" for a in align]
    return ["| " + " | ".join(_md_cell(c) for c in line) + " |" for line in [header, rule, *rows]]


def _md_cell(text: str) -> str:
    """Markdown table cells cannot hold | or newlines."""
    return str(text).replace("|", "\\|").replace("\n", "<br>")
