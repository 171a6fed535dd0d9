"""The study's summary as HTML, for a browser and for ``snakemake --report``.

:func:`recipe_mil.evaluate.summary_markdown` writes the summary as Markdown (headings, paragraphs and pipe tables
only). This module renders that same text as HTML, so ``summary.md``, ``summary.html`` and the report's front page
always show the same numbers: a standalone page (:func:`summary_page`, shown inline by the report) and the headline
section alone (:func:`headline_fragment`, pasted into the report's front page by ``workflow/report/workflow.rst``).
"""

from __future__ import annotations

import html
import re

#: id of the element that holds the headline table on the report's front page (the report test looks for it)
HEADLINE_ID = "recipe-mil-headline"

_TABLE_CSS = """
table.recipe-mil { border-collapse: collapse; font-size: 12px; margin: 0.5em 0 1.2em 0; }
table.recipe-mil th, table.recipe-mil td { border: 1px solid #d0d4da; padding: 3px 6px; vertical-align: top; }
table.recipe-mil th { background: #eef1f5; text-align: center; }
table.recipe-mil td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
table.recipe-mil td.sig { font-weight: bold; background: #fff4d6; }
table.recipe-mil span.ci { color: #555; font-size: 11px; }
table.recipe-mil tbody tr:nth-child(even) { background: #f8f9fb; }
"""

# The report's front page (Snakemake 9's HTML report) puts the description in a narrow, vertically centred column
# beside the rule graph. These rules widen it, align it to the top and let the rule graph wrap below the table.
# They match only the element that holds the headline (`:has`), so the rest of the report keeps its layout; if a
# later Snakemake renames its classes, the table is still there, only narrower.
_FRONT_PAGE_CSS = f"""
div.h-screen.overflow-auto:has(#{HEADLINE_ID}) {{ align-items: flex-start; justify-content: flex-start; }}
div.gap-3:has(#{HEADLINE_ID}) {{ flex-wrap: wrap; }}
div.max-w-lg:has(> #{HEADLINE_ID}), div.max-w-lg:has(#{HEADLINE_ID}) {{ max-width: none; }}
#{HEADLINE_ID} table.recipe-mil {{ margin-top: 0.4em; }}
#{HEADLINE_ID} code::before, #{HEADLINE_ID} code::after {{ content: none; }}
"""

_PAGE_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.2em 2em; color: #1f2328; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #d0d4da; }
p { max-width: 60em; line-height: 1.45; font-size: 14px; }
code { background: #eef1f5; padding: 0 3px; border-radius: 3px; }
"""

_NUMBER = re.compile(r"^[+-]?\d+(\.\d+)?( ± \d+(\.\d+)?)?$|^n/a$|^\d+–\d+$")
_DIFFERENCE = re.compile(r"^(?P<value>[+-]\d+\.\d+)(?: \[(?P<ci>[^\]]+)\])?(?P<star>\*?)$")


def _inline(text: str) -> str:
    """Escape ``text`` and render Markdown code spans."""
    parts = text.split("`")
    return "".join(f"<code>{html.escape(p)}</code>" if i % 2 else html.escape(p) for i, p in enumerate(parts))


def _header(text: str) -> str:
    # long method names (ablation_pooled_proportions) may break after an underscore, so the columns stay narrow
    return html.escape(text).replace("_", "_<wbr>")


def _cell(text: str) -> str:
    diff = _DIFFERENCE.match(text)
    if diff:
        cls = "num sig" if diff["star"] else "num"
        ci = f'<br><span class="ci">[{html.escape(diff["ci"])}]</span>' if diff["ci"] else ""
        return f'<td class="{cls}">{diff["value"]}{diff["star"]}{ci}</td>'
    cls = ' class="num"' if _NUMBER.match(text) else ""
    return f"<td{cls}>{_inline(text)}</td>"


def _row(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _table(lines: list[str]) -> str:
    head = "".join(f"<th>{_header(c)}</th>" for c in _row(lines[0]))
    body = "\n".join("<tr>" + "".join(_cell(c) for c in _row(line)) + "</tr>" for line in lines[2:])
    return f'<table class="recipe-mil">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>'


def markdown_html(markdown: str) -> str:
    """Render the summary's Markdown (``#`` headings, paragraphs, pipe tables, code spans) as HTML.

    Parameters
    ----------
    markdown
        Text in the subset :func:`recipe_mil.evaluate.summary_markdown` writes.

    Returns
    -------
    str
        HTML elements (no ``<html>`` or ``<body>``). Difference cells (``+0.028 [-0.58, +0.64]*``) show the
        interval on a second line; cells marked ``*`` (Holm p < 0.05) are highlighted.
    """
    blocks: list[list[str]] = [[]]
    for line in markdown.splitlines():
        if line.strip():
            blocks[-1].append(line)
        elif blocks[-1]:
            blocks.append([])
    out = []
    for block in filter(None, blocks):
        heading = re.match(r"^(#{1,6}) (.*)$", block[0])
        if heading and len(block) == 1:
            level = len(heading[1])
            out.append(f"<h{level}>{_inline(heading[2])}</h{level}>")
        elif block[0].startswith("|") and len(block) >= 2 and set(block[1]) <= set("|-: "):
            out.append(_table(block))
        else:
            out.append(f"<p>{_inline(' '.join(block))}</p>")
    return "\n".join(out)


def summary_page(markdown: str, *, title: str = "recipe-mil summary") -> str:
    """Return a standalone HTML page of the whole summary (what the report shows for ``summary.html``)."""
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        f"<title>{html.escape(title)}</title>\n<style>{_PAGE_CSS}{_TABLE_CSS}</style>\n</head>\n<body>\n"
        f"{markdown_html(markdown)}\n</body>\n</html>\n"
    )


def headline_section(markdown: str) -> str:
    """Return the summary's opening: its introduction and its first ``##`` section (the headline table), as Markdown.

    Raises
    ------
    ValueError
        If the text has no ``##`` section.
    """
    sections = re.split(r"(?m)^(?=## )", markdown)
    if len(sections) < 2:
        raise ValueError("the summary has no '## ' section to show as its headline")
    intro = re.sub(r"(?m)^# .*\n", "", sections[0])  # the page title is the report's, not the table's
    return intro + sections[1]


def headline_fragment(markdown: str) -> str:
    """Return the headline section as an HTML fragment for the report's front page (``<div id=HEADLINE_ID>``)."""
    return (
        f'<div id="{HEADLINE_ID}">\n<style>{_FRONT_PAGE_CSS}{_TABLE_CSS}</style>\n'
        f"{markdown_html(headline_section(markdown))}\n</div>\n"
    )
