"""``index.html``: one self-contained page (inline CSS and JS, relative image links, no network).

The page works from ``file://``. A small inline script sorts and filters the table; on
``load`` it also writes ``{"images", "loaded", "pending", "broken", "rows"}`` as JSON into
the hidden ``<pre id="selftest">``, which a headless browser's ``--dump-dom`` can read back
("pending": lazy thumbnails not scrolled into view yet, pages of more than 300 classes).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from html import escape

from evofool.gallery.images import format_activation, format_confidence, value_color, value_text
from evofool.gallery.plots import logit10_from_log_prob
from evofool.gallery.rundata import RunData

LAZY_ABOVE = 300   # more rows than this: images load lazily (as they scroll into view)
THUMB = 84         # CSS pixels of a table thumbnail (about)
BAR_FLOOR = -2.0   # confidence bars start at 1 % (logit10 = -2) and end at the best row


@dataclass(frozen=True)
class Row:
    """One table row: a champion and its exported files (paths relative to the page).

    ``fitness`` and ``confidence`` are the champion's (``rundata.Champion``): a
    log-probability and its probability, or an activation and ``None``.
    """

    index: int
    name: str
    fitness: float
    confidence: float | None
    generation: int
    image: str
    enlarged: str | None
    width: int
    height: int


CSS = """
:root{--bg:#16181d;--panel:#1e2127;--line:#2c3038;--ink:#dee2e8;--muted:#969ca6;--accent:#7fb0ff}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
header{padding:22px 28px 12px;border-bottom:1px solid var(--line)}
h1{margin:0 0 8px;font-size:22px;font-weight:600}
h1 small{color:var(--muted);font-weight:400;font-size:15px}
.chips{display:flex;flex-wrap:wrap;gap:6px}
.chip{background:var(--panel);border:1px solid var(--line);border-radius:999px;padding:2px 10px;color:var(--muted)}
.chip b{color:var(--ink);font-weight:600}
.live{margin-top:10px;padding:6px 12px;border-radius:6px;background:#2b2a1c;color:#e0c05e;display:inline-block}
main{padding:16px 28px 40px}
.plots{display:flex;flex-wrap:wrap;gap:14px;margin-bottom:14px}
.plots a{flex:1 1 420px;max-width:600px}.plots img{width:100%;height:auto;display:block;border:1px solid var(--line);border-radius:6px;background:var(--panel)}
.links{margin:0 0 14px;color:var(--muted)}
a{color:var(--accent);text-decoration:none}a:hover{text-decoration:underline}
.controls{display:flex;flex-wrap:wrap;gap:10px;align-items:center;margin:8px 0 12px}
input,select{background:var(--panel);color:var(--ink);border:1px solid var(--line);border-radius:6px;padding:7px 10px;font:inherit}
input{width:min(360px,100%)}
#count{color:var(--muted)}
table{border-collapse:collapse;width:100%;max-width:900px}
th{text-align:left;color:var(--muted);font-weight:500;border-bottom:1px solid var(--line);padding:6px 10px;white-space:nowrap}
th button{all:unset;cursor:pointer}th button:hover{color:var(--ink)}
th[aria-sort=ascending] button::after{content:" \\25B2";font-size:10px}
th[aria-sort=descending] button::after{content:" \\25BC";font-size:10px}
td{border-bottom:1px solid var(--line);padding:6px 10px;vertical-align:middle}
tr:hover td{background:#1b1e24}
td.img{width:1%;padding:4px 10px}
td.img img{display:block;background:#000;border-radius:3px}
img.px{image-rendering:pixelated;image-rendering:crisp-edges}
td.idx,td.gen{color:var(--muted);font-variant-numeric:tabular-nums}
td.name{font-weight:600}
td.conf{font-variant-numeric:tabular-nums;white-space:nowrap}
.bar{display:block;height:4px;margin-top:4px;border-radius:2px;background:currentColor;opacity:.55}
#selftest{display:none}
"""

JS = """
(function(){
  var tbody=document.querySelector('#classes tbody');
  var rows=Array.prototype.slice.call(tbody.rows);
  var filter=document.getElementById('filter'),order=document.getElementById('order');
  var count=document.getElementById('count');
  var start=(document.getElementById('classes').dataset.sort||'class:1').split(':');
  var state={key:start[0],dir:+start[1]};
  function cmp(a,b){
    var x=a.dataset[state.key],y=b.dataset[state.key];
    var c=state.key==='name'?x.localeCompare(y):(parseFloat(x)-parseFloat(y));
    return state.dir*c||(a.dataset['class']-b.dataset['class']);
  }
  function apply(){
    var q=filter.value.trim().toLowerCase(),shown=0,frag=document.createDocumentFragment();
    rows.slice().sort(cmp).forEach(function(r){
      var hit=!q||r.dataset.name.indexOf(q)>=0||r.dataset['class']===q;
      r.hidden=!hit;if(hit)shown++;frag.appendChild(r);
    });
    tbody.appendChild(frag);
    count.textContent='showing '+shown+' of '+rows.length;
    document.querySelectorAll('th[data-key]').forEach(function(th){
      th.setAttribute('aria-sort',th.dataset.key===state.key?(state.dir>0?'ascending':'descending'):'none');
    });
    order.value=state.key+':'+state.dir;
    try{history.replaceState(null,'','#'+new URLSearchParams({sort:state.key,dir:state.dir,q:filter.value}));}catch(e){}
  }
  document.querySelectorAll('th[data-key] button').forEach(function(b){
    b.addEventListener('click',function(){
      var key=b.parentNode.dataset.key;
      if(state.key===key){state.dir=-state.dir;}else{state.key=key;state.dir=(key==='conf'||key==='gen')?-1:1;}
      apply();
    });
  });
  order.addEventListener('change',function(){var p=order.value.split(':');state.key=p[0];state.dir=+p[1];apply();});
  filter.addEventListener('input',apply);
  var h=new URLSearchParams(location.hash.slice(1));
  if(h.get('sort')&&document.querySelector('th[data-key="'+h.get('sort')+'"]')){state.key=h.get('sort');state.dir=h.get('dir')==='-1'?-1:1;}
  if(h.get('q'))filter.value=h.get('q');
  apply();
  window.addEventListener('load',function(){
    var imgs=Array.prototype.slice.call(document.images);
    var ok=function(i){return i.complete&&i.naturalWidth>0;};
    var bad=function(i){return i.complete&&!(i.naturalWidth>0);};
    document.getElementById('selftest').textContent=JSON.stringify({
      images:imgs.length,loaded:imgs.filter(ok).length,rows:rows.length,
      pending:imgs.filter(function(i){return !i.complete;}).length,
      broken:imgs.filter(bad).slice(0,20).map(function(i){return i.getAttribute('src');})});
  });
})();
"""


def _display_size(width: int, height: int) -> tuple[int, int, bool]:
    """Thumbnail size in CSS px, and whether it is an integer zoom (render pixelated)."""
    side = max(width, height)
    if side <= THUMB:
        k = max(1, THUMB // side)
        return width * k, height * k, True
    k = min(1.0, 112 / side)
    return round(width * k), round(height * k), False


def _row(row: Row, position: int, lazy: bool, share: float) -> str:
    """One ``<tr>``; ``share`` (0..1) is the length of its value bar."""
    w, h, pixelated = _display_size(row.width, row.height)
    r, g, b = value_color(row)
    name = escape(row.name)
    img = (f'<img src="{escape(row.image)}" width="{w}" height="{h}" alt="champion for {name}"'
           f'{" class=px" if pixelated else ""}{" loading=lazy" if lazy else ""}>')
    link = escape(row.enlarged or row.image)
    exact = (f"activation = {row.fitness!r}" if row.confidence is None
             else f"p = {row.confidence!r}, log p = {row.fitness!r}")
    return (f'<tr data-class="{row.index}" data-pos="{position}" data-name="{escape(row.name.lower())}" '
            f'data-conf="{row.fitness!r}" data-gen="{row.generation}">'
            f'<td class="img"><a href="{link}">{img}</a></td>'
            f'<td class="idx">{row.index}</td><td class="name">{name}</td>'
            f'<td class="conf" style="color:rgb({r},{g},{b})" title="{exact}">{escape(value_text(row))}'
            f'<span class="bar" style="width:{100 * share:.1f}%"></span></td>'
            f'<td class="gen">{row.generation}</td></tr>')


def _bar_shares(run: RunData, rows: list[Row]) -> list[float]:
    """Each row's bar length (0.02..1): confidences on the logit axis from 1 % to the best row,
    activations from the lowest to the highest shown."""
    if run.is_probability:
        values = [float(logit10_from_log_prob(r.fitness)) for r in rows]
        low, high = BAR_FLOOR, max([2.0] + values)
    else:
        values = [r.fitness for r in rows]
        low, high = min(values, default=0.0), max(values, default=1.0)
    span = (high - low) or 1.0
    return [min(1.0, max(0.02, (v - low) / span)) for v in values]


def _value_chips(run: RunData) -> list[str]:
    """The header chips summing up the champions: counts at 99 % / 99.99 % and the median
    confidence, or a unit run's median and best activation."""
    if not run.is_probability:
        values = [c.fitness for c in run.champions]
        return [_chip("median activation", format_activation(statistics.median(values))),
                _chip("best activation", format_activation(max(values)))]
    confs = [c.confidence for c in run.champions]
    n99 = sum(p >= 0.99 for p in confs)
    n9999 = sum(p >= 0.9999 for p in confs)
    median = statistics.median(confs) if confs else float("nan")
    return [_chip("≥ 99 %", f"{n99} / {run.num_classes}"), _chip("≥ 99.99 %", f"{n9999} / {run.num_classes}"),
            _chip("median", format_confidence(median))]


def _chip(label: str, value: object) -> str:
    return f'<span class="chip">{escape(label)} <b>{escape(str(value))}</b></span>'


def render_index(run: RunData, rows: list[Row], plots: list[str], sheets: list[str], live: bool,
                 ordered: str | None = None) -> str:
    """The page's HTML.

    Args:
        run: The run (config and counts for the header).
        rows: The exported champions, in class order (or the export's order).
        plots: Plot image paths relative to the page.
        sheets: Contact-sheet paths relative to the page.
        live: Written during a run: show a banner and reload every 30 s until it finishes.
        ordered: How the export ordered ``rows`` (e.g. ``best first`` for ``--top``): the
            page then opens in that order; ``None``: by class index.
    """
    cfg = run.config
    title = escape(run.folder.path.resolve().name)
    chips = "".join([
        _chip("model", cfg.get("model")), _chip("encoding", cfg.get("encoding")),
        _chip("seed", cfg.get("seed")), _chip("population", cfg.get("population")),
        _chip("generations", f"{run.generations_done} / {cfg.get('generations')}"), *_value_chips(run),
    ])
    pending = live and not run.finished
    banner = (f'<div class="live">Live gallery: generation {run.generations_done} of {cfg.get("generations")}, '
              f'updated at every checkpoint ({time.strftime("%H:%M:%S")}); this page reloads itself.</div>'
              if pending else "")
    refresh = '<meta http-equiv="refresh" content="30">' if pending else ""
    lazy = len(rows) > LAZY_ABOVE
    body_rows = "\n".join(_row(r, i, lazy, share) for i, (r, share) in enumerate(zip(rows, _bar_shares(run, rows))))
    value = "confidence" if run.is_probability else "activation"
    # The page opens sorted as the export ordered it (``--top``: best first), else by class.
    start = "pos:1" if ordered else "class:1"
    export_order = f'<option value="pos:1">{escape(ordered)}</option>' if ordered else ""
    plot_html = "".join(f'<a href="{escape(p)}"><img src="{escape(p)}" alt="{escape(p)}"></a>' for p in plots)
    sheet_links = " · ".join(f'<a href="{escape(s)}">page {i}</a>' for i, s in enumerate(sheets, 1))
    shown = (f"{len(rows)} of {run.num_classes} {run.cells}" if len(rows) != run.num_classes
             else f"{len(rows)} {run.cells}")
    heading = "Fooling images" if run.is_probability else "Activation maximisation"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">{refresh}
<title>evofool gallery · {title}</title>
<style>{CSS}</style></head>
<body>
<header><h1>{heading} <small>{title} · {escape(shown)}</small></h1>
<div class="chips">{chips}</div>{banner}</header>
<main>
<div class="plots">{plot_html}</div>
<p class="links">Contact sheet: {sheet_links or ("written when the run finishes" if pending else "none")} · Manifest: <a href="manifest.json">JSON</a> · <a href="manifest.csv">CSV</a></p>
<div class="controls">
<input id="filter" type="search" placeholder="Filter by class name or index" aria-label="filter" autocomplete="off">
<select id="order" aria-label="sort">
{export_order}<option value="class:1">class index</option><option value="conf:-1">{value}, highest first</option>
<option value="conf:1">{value}, lowest first</option><option value="name:1">class name</option>
<option value="gen:-1">generation found, latest first</option><option value="gen:1">generation found, earliest first</option>
</select><span id="count"></span></div>
<table id="classes" data-sort="{start}"><thead><tr><th>image</th><th data-key="class"><button>#</button></th>
<th data-key="name"><button>class</button></th><th data-key="conf"><button>{value}</button></th>
<th data-key="gen"><button>found at generation</button></th></tr></thead>
<tbody>
{body_rows}
</tbody></table>
<pre id="selftest"></pre>
</main>
<script>{JS}</script>
</body></html>
"""

