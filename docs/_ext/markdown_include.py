"""The ``markdown-include`` directive: a Markdown file inside a reST page.

It exists for ``benchmarks/results.md``, which the benchmark harness writes
and the README and these docs both show. It converts the plain Markdown such
a report uses (headings, paragraphs, pipe tables, lists, fenced code, block
quotes; inline code, bold, italics, web links) straight to docutils nodes, so
that no Markdown text is ever re-parsed as reST: a stray ``*`` or ``|`` in a
report cannot break a ``-W`` build. Headings become rubrics, so the included
file never changes the page's section structure.

Usage::

    .. markdown-include:: ../benchmarks/results.md

       reST shown instead while the file does not exist.

The path is relative to the including document. The page is rebuilt when the
file changes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

from docutils import nodes
from docutils.parsers.rst import Directive, directives

_FENCE = re.compile(r"^\s*(```|~~~)\s*([\w+-]*)\s*$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^(\s*)[-*+]\s+(.*)$")
_NUMBERED = re.compile(r"^(\s*)\d+[.)]\s+(.*)$")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
_INLINE = re.compile(
    r"(?P<code>`+)(?P<code_text>.+?)(?P=code)"
    r"|\*\*(?P<strong>.+?)\*\*"
    r"|__(?P<strong2>.+?)__"
    r"|(?<![\w*])\*(?P<em>[^*\s](?:[^*]*[^*\s])?)\*(?![\w*])"
    r"|(?<!\w)_(?P<em2>[^_\s](?:[^_]*[^_\s])?)_(?!\w)"
    r"|!\[(?P<alt>[^\]]*)\]\((?P<src>[^)\s]+)\)"
    r"|\[(?P<link>[^\]]+)\]\((?P<href>[^)\s]+)\)"
    r"|<(?P<auto>https?://[^>\s]+)>"
)


def inline(text):
    """Docutils inline nodes for one line or paragraph of Markdown text."""
    result, position = [], 0
    for match in _INLINE.finditer(text):
        if match.start() > position:
            result.append(nodes.Text(text[position : match.start()]))
        position = match.end()
        if match.group("code") is not None:
            content = match.group("code_text").strip()
            result.append(nodes.literal(content, content))
        elif match.group("strong") or match.group("strong2"):
            inner = match.group("strong") or match.group("strong2")
            result.append(nodes.strong("", "", *inline(inner)))
        elif match.group("em") or match.group("em2"):
            inner = match.group("em") or match.group("em2")
            result.append(nodes.emphasis("", "", *inline(inner)))
        elif match.group("src") is not None:
            # Images are not copied into the build; show their description.
            label = match.group("alt") or match.group("src")
            result.append(nodes.emphasis(label, label))
        elif match.group("href") is not None:
            label, target = inline(match.group("link")), match.group("href")
            if re.match(r"^(https?|mailto):", target):
                result.append(nodes.reference("", "", *label, refuri=target))
            else:
                # A path relative to the Markdown file means nothing in the
                # built pages: keep the text, drop the link.
                result.extend(label)
        else:
            url = match.group("auto")
            result.append(nodes.reference(url, url, refuri=url))
    if position < len(text):
        result.append(nodes.Text(text[position:]))
    return result


def _paragraph(lines):
    text = " ".join(line.strip() for line in lines)
    return nodes.paragraph(text, "", *inline(text))


def _cells(line):
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|") and not line.endswith("\\|"):
        line = line[:-1]
    cells = re.split(r"(?<!\\)\|", line)
    return [cell.strip().replace("\\|", "|") for cell in cells]


def _table(header, rows):
    columns = max(len(header), *(len(row) for row in rows)) if rows else len(header)
    table = nodes.table(classes=["markdown-table"])
    group = nodes.tgroup(cols=columns)
    table += group
    # Relative widths for the builders that use them (text, LaTeX).
    for column in range(columns):
        cells = [row[column] for row in [header, *rows] if column < len(row)]
        group += nodes.colspec(colwidth=max(3, min(40, *(len(cell) for cell in cells))))

    def row_node(cells):
        row = nodes.row()
        for cell in cells + [""] * (columns - len(cells)):
            entry = nodes.entry()
            entry += nodes.paragraph(cell, "", *inline(cell))
            row += entry
        return row

    head = nodes.thead()
    head += row_node(header)
    group += head
    body = nodes.tbody()
    for cells in rows:
        body += row_node(cells)
    group += body
    return table


def _list(items, ordered):
    node = (
        nodes.enumerated_list(enumtype="arabic", prefix="", suffix=".")
        if ordered
        else nodes.bullet_list(bullet="-")
    )
    for item_lines in items:
        item = nodes.list_item()
        item += _paragraph(item_lines)
        node += item
    return node


def convert(text):
    """Docutils block nodes for a Markdown document."""
    lines = text.splitlines()
    result, paragraph = [], []
    i = 0

    def flush():
        if paragraph:
            result.append(_paragraph(paragraph))
            paragraph.clear()

    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        fence = _FENCE.match(line)
        if fence:
            flush()
            marker, language = fence.group(1), fence.group(2)
            body = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(marker):
                body.append(lines[i])
                i += 1
            code = "\n".join(body)
            block = nodes.literal_block(code, code)
            block["language"] = language or "text"
            result.append(block)
            i += 1
            continue
        if not stripped:
            flush()
            i += 1
            continue
        heading = _HEADING.match(line)
        if heading:
            flush()
            title = heading.group(2)
            result.append(nodes.rubric(title, "", *inline(title)))
            i += 1
            continue
        if re.fullmatch(r"(-{3,}|\*{3,}|_{3,})", stripped.replace(" ", "")) and not paragraph:
            i += 1  # a horizontal rule: a transition here could break the page
            continue
        if "|" in stripped and i + 1 < len(lines) and _TABLE_RULE.match(lines[i + 1]):
            flush()
            header = _cells(line)
            rows = []
            i += 2
            while i < len(lines) and lines[i].strip() and "|" in lines[i]:
                rows.append(_cells(lines[i]))
                i += 1
            result.append(_table(header, rows))
            continue
        if stripped.startswith(">"):
            flush()
            quoted = []
            while i < len(lines) and lines[i].strip().startswith(">"):
                quoted.append(lines[i].strip()[1:].strip())
                i += 1
            quote = nodes.block_quote()
            for node in convert("\n".join(quoted)):
                quote += node
            result.append(quote)
            continue
        item = _BULLET.match(line) or _NUMBERED.match(line)
        if item and not paragraph:
            ordered = _BULLET.match(line) is None
            pattern = _NUMBERED if ordered else _BULLET
            items = []
            while i < len(lines):
                current = lines[i]
                match = pattern.match(current)
                if match:
                    items.append([match.group(2)])
                elif current.strip() and current[:1].isspace() and items:
                    items[-1].append(current)
                else:
                    break
                i += 1
            result.append(_list(items, ordered))
            continue
        paragraph.append(line)
        i += 1
    flush()
    return result


class MarkdownInclude(Directive):
    """Include a Markdown file; show the directive's content if it is missing."""

    required_arguments = 1
    has_content = True
    option_spec: ClassVar = {"start-after": directives.unchanged}

    def run(self):
        env = self.state.document.settings.env
        relative, absolute = env.relfn2path(self.arguments[0])
        # Rebuild this page when the file appears, changes or disappears.
        env.note_dependency(relative)
        path = Path(absolute)
        if not path.is_file():
            container = nodes.container(classes=["markdown-include-missing"])
            self.state.nested_parse(self.content, self.content_offset, container)
            return [container]
        text = path.read_text(encoding="utf-8")
        marker = self.options.get("start-after")
        if marker and marker in text:
            text = text.split(marker, 1)[1]
        return convert(text)


def setup(app):
    app.add_directive("markdown-include", MarkdownInclude)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
