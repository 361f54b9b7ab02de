"""HTML building blocks for the report pages, escaping by construction.

`Html` marks markup that is already safe; `esc` escapes everything else, and every helper here passes its
text and attribute values through `esc`. So a string from a run directory (class names, file names, config
values, metric keys) cannot become markup unless code wraps it in `Html` on purpose, which nothing does.

The pages are single files: inline CSS, images as data URIs, no script, and a Content-Security-Policy that
tells the browser to load nothing else, so a report opens offline and makes no request.
"""

from __future__ import annotations

import html
from collections.abc import Iterable

from visiontl import __version__
from visiontl.report.tables import Table, looks_numeric

# Nothing but inline styles and data: images may load; no script may run.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; form-action 'none'; base-uri 'none'"

STYLE = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       margin: 0; color: #1f2328; background: #fff; line-height: 1.45; font-size: 15px; }
main, body > footer { max-width: 1120px; margin: 0 auto; padding: 0 24px; }
h1 { font-size: 1.6em; margin: 28px 0 8px; }
h2 { font-size: 1.3em; margin: 36px 0 10px; padding-bottom: 4px; border-bottom: 1px solid #d0d7de; }
h3 { font-size: 1.05em; margin: 22px 0 8px; }
nav ol { margin: 4px 0; padding-left: 22px; columns: 2; max-width: 560px; }
a { color: #0969da; }
table { border-collapse: collapse; margin: 8px 0 4px; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 10px; border-bottom: 1px solid #d8dee4; text-align: left; vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; }
tbody tr:nth-child(even) td { background: #fbfbfc; }
td.num, th.num { text-align: right; white-space: nowrap; }
table.facts th { background: none; padding-left: 0; width: 13em; }
.note { color: #57606a; font-size: 0.9em; margin: 4px 0 10px; }
.missing { background: #fff8c5; border: 1px solid #e8d38a; padding: 6px 10px; border-radius: 4px; }
.detail { display: block; color: #57606a; font-size: 0.85em; }
.beyond { font-weight: 700; color: #0a3069; }
figure { margin: 12px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { color: #57606a; font-size: 0.88em; margin-top: 4px; overflow-wrap: anywhere; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); gap: 12px; }
.gallery figure { margin: 0; }
pre { background: #f6f8fa; padding: 12px; overflow: auto; max-height: 36em; font-size: 0.85em; border-radius: 4px; }
details { margin: 10px 0; }
summary { cursor: pointer; color: #0969da; }
.scroll { overflow-x: auto; }
footer { color: #57606a; font-size: 0.85em; border-top: 1px solid #d0d7de; margin-top: 40px; padding: 12px 24px 28px; }
"""



class Html(str):
    """Markup that is safe to place in a page as it is."""


def esc(value: object) -> Html:
    return value if isinstance(value, Html) else Html(html.escape(str(value), quote=True))


def join(parts: Iterable[object]) -> Html:
    return Html("".join(esc(p) for p in parts))


def _attributes(attrs: dict[str, object]) -> str:
    """Attribute names ending in `_` lose it (`class_` -> `class`); None leaves the attribute out."""
    return "".join(f' {key.rstrip("_")}="{esc(value)}"' for key, value in attrs.items() if value is not None)


def tag(name: str, *children: object, **attrs: object) -> Html:
    return Html(f"<{name}{_attributes(attrs)}>{join(children)}</{name}>")


def void(name: str, **attrs: object) -> Html:
    """An element without content or end tag (`img`)."""
    return Html(f"<{name}{_attributes(attrs)}>")


def section(anchor: str, title: str, *content: object) -> Html:
    return tag("section", tag("h2", title), *content, id=anchor)


def cell(name: str, value: object) -> Html:
    """A table cell; numbers (and the missing-value dash) right-aligned."""
    numeric = isinstance(value, str) and looks_numeric(value)
    return tag(name, value, class_="num" if numeric else None)


def render_table(table: Table, class_: str | None = None, align_numbers: bool = True) -> Html:
    """Numbers right-aligned (columns of values), unless `align_numbers` is False (a field: value list)."""
    def cell_of(name: str, value: str) -> Html:
        return cell(name, value) if align_numbers else tag(name, value)

    head = tag("thead", tag("tr", *(cell_of("th", h) for h in table.header)))
    body = tag("tbody", *(tag("tr", *(cell_of("td", c) for c in row)) for row in table.rows))
    notes = [tag("p", n, class_="note") for n in table.notes]
    return join([tag("div", tag("table", head, body, class_=class_), class_="scroll"), *notes])


def image(uri: str, alt: str, caption: object = None) -> Html:
    # Only data: URIs reach this page: anything else would be a request to somewhere.
    if not uri.startswith("data:image/"):
        raise ValueError("report images must be data: URIs")
    caption_html = tag("figcaption", caption) if caption is not None else ""
    return tag("figure", void("img", src=uri, alt=alt), caption_html)


def contents(entries: list[tuple[str, str]]) -> Html:
    return tag("nav", tag("h2", "Contents"), tag("ol", *(tag("li", tag("a", title, href=f"#{anchor}"))
                                                         for anchor, title in entries)))


def page(title: str, body: list[Html], footer: object) -> str:
    head = join([
        Html('<meta charset="utf-8">'),
        Html(f'<meta http-equiv="Content-Security-Policy" content="{esc(CSP)}">'),
        Html('<meta name="viewport" content="width=device-width, initial-scale=1">'),
        Html('<meta name="referrer" content="no-referrer">'),
        tag("title", title),
        Html(f"<style>{STYLE}</style>"),
    ])
    end = tag("footer", footer, f" Written by visiontl {__version__}; self-contained: no script, no network.",
              id="report-end")
    return f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>{head}</head>\n<body>\n<main>\n" + "\n".join(body) + \
        f"\n</main>\n{end}\n</body>\n</html>\n"
