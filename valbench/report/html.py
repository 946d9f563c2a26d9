"""A static, self-contained leaderboard page: one HTML file with inline CSS and vanilla
JavaScript, figures embedded as data URIs, nothing fetched from anywhere (a Content
Security Policy in the page forbids it), no server.

``page(title, tables, figures, provenance, notes)`` returns the page as a string. Every
table sorts by any column on a click on its header (click again: the other direction;
cells whose text starts with a number sort numerically, empty and NA cells last) and,
when it has ``dataset`` / ``corruption`` columns (or ``dataset_label`` /
``corruption_label``), filters by them with select boxes. Cells that carry a mark (a
``marks`` column, or text with ``*``, ``failed``, ``timeout``, ``oom`` or
``interrupted``) are highlighted, and a legend under the table says what each mark means.
All text is escaped.
"""
from __future__ import annotations

import base64
import json
import math
import re
from html import escape
from pathlib import Path
from typing import Any

import pandas as pd

FILTERS = (("dataset", ("dataset", "dataset_label")), ("corruption", ("corruption", "corruption_label")))
MIME = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif"}
NUMBER = re.compile(r"^\s*([-+−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?(?:[eE][-+]?\d+)?|[-+]?\.\d+(?:[eE][-+]?\d+)?)")
FAILED = re.compile(r"\b(failed|timeout|timed out|oom|interrupted|running)\b", re.IGNORECASE)
EMPTY = {"", "na", "nan", "none", "-", "—", "–"}
LEGEND = {
    "stopped": "* = a budget stopped the valuation before it finished (a result of unfinished work)",
    "failed": "failed / timed out / out of memory / interrupted / still running jobs: no result, or fewer seeds "
              "than the others",
    "other": "see the marks column",
}
CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1200px;
 padding:0 1em;color:#1b1b1b}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ccc}
nav a{margin-right:1em}
.controls{margin:.5em 0;display:flex;gap:1.2em;align-items:center;flex-wrap:wrap}
.count{color:#555}
.scroll{overflow-x:auto}
table{border-collapse:collapse;margin:.3em 0}
th,td{border:1px solid #bbb;padding:.3em .6em;text-align:left;vertical-align:top}
table.lb th{background:#eef1f5;cursor:pointer;user-select:none;position:sticky;top:0;white-space:nowrap}
table.lb th:hover,table.lb th:focus{background:#dde3ec;outline:2px solid #5b7db1}
table.lb th::after{content:" \\2195";color:#999}
table.lb th[aria-sort=ascending]::after{content:" \\25B2";color:#000}
table.lb th[aria-sort=descending]::after{content:" \\25BC";color:#000}
table.lb td{white-space:nowrap}table.lb td.long{white-space:normal;min-width:24em}
td.num{text-align:right;font-variant-numeric:tabular-nums}
p.caption{margin:.2em 0 .6em 0;color:#333;max-width:70em}
tbody tr:nth-child(even){background:#fafafa}
.mark-stopped{background:#fff1c2;box-shadow:inset 4px 0 0 #a07800;font-style:italic}
.mark-failed{background:#fbdcdc;box-shadow:inset 4px 0 0 #a11;font-weight:600}
.mark-other{background:#e4ecf7;box-shadow:inset 4px 0 0 #36c}
.legend{font-size:.9em;margin:.3em 0 1em 0;padding:0;list-style:none}
.legend li{margin:.15em 0}
.swatch{display:inline-block;width:1.6em;height:1em;vertical-align:middle;margin-right:.5em;border:1px solid #999}
figure{margin:1.5em 0}figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:.9em;color:#333;margin-top:.3em}
.notes p{max-width:60em}
table.prov td:first-child{font-family:ui-monospace,monospace;white-space:nowrap}
table.prov td{font-size:.9em}
"""
JS = """
(function(){
 'use strict';
 function key(td){
  var s=td.getAttribute('data-sort');
  if(s!==null&&s!==''){return {rank:0,num:parseFloat(s),text:''};}
  if(td.hasAttribute('data-empty')){return {rank:2,num:0,text:''};}
  return {rank:1,num:0,text:td.textContent.trim()};
 }
 function sortBy(table,col,th){
  var dir=th.getAttribute('aria-sort')==='ascending'?'descending':'ascending';
  Array.prototype.forEach.call(table.tHead.rows[0].cells,function(h){h.setAttribute('aria-sort','none');});
  th.setAttribute('aria-sort',dir);
  var sign=dir==='ascending'?1:-1, body=table.tBodies[0];
  var rows=Array.prototype.map.call(body.rows,function(r,i){return {row:r,i:i,k:key(r.cells[col])};});
  rows.sort(function(a,b){
   if(a.k.rank!==b.k.rank){return a.k.rank-b.k.rank;}
   var c=a.k.rank===0?a.k.num-b.k.num:a.k.text.localeCompare(b.k.text,undefined,{numeric:true});
   return c!==0?sign*c:a.i-b.i;
  });
  rows.forEach(function(o){body.appendChild(o.row);});
 }
 function filter(table){
  var sels=document.querySelectorAll('select[data-table="'+table.id+'"]'), shown=0, body=table.tBodies[0];
  Array.prototype.forEach.call(body.rows,function(r){
   var ok=true;
   Array.prototype.forEach.call(sels,function(s){
    var col=parseInt(s.getAttribute('data-col'),10);
    if(s.value!==''&&r.cells[col].textContent!==s.value){ok=false;}
   });
   r.hidden=!ok; if(ok){shown++;}
  });
  var count=document.getElementById(table.id+'-count');
  if(count){count.textContent=shown+' of '+body.rows.length+' rows shown';}
 }
 Array.prototype.forEach.call(document.querySelectorAll('table.lb'),function(table){
  Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th,col){
   th.addEventListener('click',function(){sortBy(table,col,th);});
   th.addEventListener('keydown',function(e){
    if(e.key==='Enter'||e.key===' '){e.preventDefault();sortBy(table,col,th);}
   });
  });
  Array.prototype.forEach.call(document.querySelectorAll('select[data-table="'+table.id+'"]'),function(s){
   s.addEventListener('change',function(){filter(table);});
  });
  filter(table);
 });
})();
"""


def _text(v: Any) -> str:
    """A cell's text: numbers compactly, missing values as NA."""
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA or v is pd.NaT:
        return "NA"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    return str(v)


def _sort_value(v: Any, text: str) -> float | None:
    """The number a cell sorts by: its value, or the number its text starts with."""
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
        return float(v)
    m = NUMBER.match(text)
    return float(m.group(1).replace(",", "").replace("−", "-")) if m else None


def _marks(text: str, in_marks_column: bool) -> list[str]:
    """The marks a cell carries: 'failed' and 'stopped' may come together ("* 1 failed")."""
    marks = [m for m, hit in (("failed", FAILED.search(text)), ("stopped", "*" in text)) if hit]
    if not marks and in_marks_column and text.strip().lower() not in EMPTY:
        marks = ["other"]
    return marks


def _column_name(c: Any) -> str:
    return " / ".join(map(str, c)) if isinstance(c, tuple) else str(c)


def _table(tid: str, caption: str, df: pd.DataFrame) -> str:
    if not isinstance(df.index, pd.RangeIndex) or df.index.name is not None:
        df = df.reset_index()
    names = [_column_name(c) for c in df.columns]
    head, _, rest = caption.partition(": ") if len(caption.partition(": ")[0]) <= 40 else (caption, "", "")
    out = [f'<section id="{tid}-section"><h2>{escape(head)}</h2>']
    if rest:  # "Table 1: what it shows ..." -> a short heading and the caption under it
        out.append(f'<p class="caption">{escape(rest)}</p>')
    controls = []
    for label, accepted in FILTERS:
        col = next((i for i, n in enumerate(names) if n in accepted), None)
        if col is None:
            continue
        options = sorted({_text(v) for v in df.iloc[:, col]}, key=str.lower)
        opts = "".join(f'<option value="{escape(o)}">{escape(o)}</option>' for o in options)
        controls.append(f'<label>{escape(label)} <select data-table="{tid}" data-col="{col}" '
                        f'aria-label="filter by {escape(label)}"><option value="">all</option>{opts}</select></label>')
    controls.append(f'<span class="count" id="{tid}-count">{len(df)} rows</span>')
    out.append(f'<div class="controls">{"".join(controls)}</div>')
    head = "".join(f'<th scope="col" tabindex="0" aria-sort="none" title="sort by {escape(n)}">{escape(n)}</th>'
                   for n in names)
    rows, seen = [], set()
    for values in df.itertuples(index=False, name=None):
        cells = []
        for name, v in zip(names, values):
            text = _text(v)
            num = _sort_value(v, text)
            marks = _marks(text, name == "marks")
            seen.update(marks)
            numeric = isinstance(v, float) or (num is not None and not isinstance(v, str))  # NaN too: NA aligns
            classes = " ".join(["num"] * numeric + ["long"] * (len(text) > 80)
                               + [f"mark-{m}" for m in marks])
            attrs = f' class="{classes}"' if classes else ""
            if num is not None and math.isfinite(num):
                attrs += f' data-sort="{num!r}"'
            elif text.strip().lower() in EMPTY:
                attrs += " data-empty"
            cells.append(f"<td{attrs}>{escape(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    out.append(f'<div class="scroll"><table class="lb" id="{tid}"><thead><tr>{head}</tr></thead>'
               f'<tbody>{"".join(rows)}</tbody></table></div>')
    marks = [m for m in LEGEND if m in seen]
    if marks:
        items = "".join(f'<li><span class="swatch mark-{m}"></span>{escape(LEGEND[m])}</li>'
                        for m in marks)
        out.append(f'<ul class="legend" aria-label="marks">{items}</ul>')
    out.append("</section>")
    return "\n".join(out)


def _short(caption: str) -> str:
    """A table's name in the page's contents: 'Table 1' of 'Table 1: ...', else its first 40 characters."""
    head = caption.partition(": ")[0]
    return head if len(head) <= 40 else head[:39] + "…"


def _figure(i: int, caption: str, path: Path) -> str:
    path = Path(path)
    mime = MIME.get(path.suffix.lower())
    if mime is None:
        raise ValueError(f"figure {path} cannot be shown in a page; give a PNG, SVG, JPEG or GIF "
                         f"(a PDF is for print)")
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure id="figure-{i}"><img src="data:{mime};base64,{data}" alt="{escape(caption)}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def _flatten(d: dict, prefix: str = "") -> list[tuple[str, str]]:
    rows = []
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            rows += _flatten(v, name + ".")
        elif isinstance(v, str):
            rows.append((name, v))
        else:
            rows.append((name, json.dumps(v, default=str)))
    return rows


def page(title: str, tables: list[tuple[str, pd.DataFrame]], figures: list[tuple[str, Path]],
         provenance: dict, notes: str = "") -> str:
    """The leaderboard as one self-contained HTML document.

    ``tables``: (caption, table) pairs, shown in order; ``figures``: (caption, image file)
    pairs (PNG, SVG, JPEG or GIF), embedded; ``provenance``: shown as a key/value table at
    the bottom (nested dicts flattened to dotted keys); ``notes``: plain text under the
    title, paragraphs separated by blank lines."""
    sections = [_table(f"t{i}", caption, df) for i, (caption, df) in enumerate(tables)]
    figs = [_figure(i, caption, path) for i, (caption, path) in enumerate(figures)]
    nav = [f'<a href="#t{i}-section">{escape(_short(c))}</a>' for i, (c, _) in enumerate(tables)]
    if figs:
        nav.append('<a href="#figures">Figures</a>')
    nav.append('<a href="#provenance">Provenance</a>')
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", notes) if p.strip()]
    prov = "".join(f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in _flatten(provenance))
    csp = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
           "base-uri 'none'; form-action 'none'")
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>",
        f"<header><h1>{escape(title)}</h1><nav>{''.join(nav)}</nav></header>",
        f'<div class="notes">{"".join(f"<p>{escape(p)}</p>" for p in paragraphs)}</div>' if paragraphs else "",
        "<main>", *sections,
        ('<section id="figures"><h2>Figures</h2>' + "\n".join(figs) + "</section>") if figs else "",
        '<section id="provenance"><h2>Provenance</h2>',
        f'<table class="prov"><tbody>{prov}</tbody></table></section>' if prov else "<p>none recorded</p></section>",
        f"</main><script>{JS}</script></body></html>",
    ])
