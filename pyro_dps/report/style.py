"""The page's inline style sheet and its small sort/filter script (a header click sorts a `sortable` table, by
a cell's `data-v` number when it has one; a `filter` text box hides the rows of its table that lack its text):
nothing is fetched, so the page reads anywhere."""

CSS = """
:root { --pass:#1a7f37; --warn:#9a6700; --fail:#cf222e; --ink:#1f2328; --muted:#59636e; --line:#d1d9e0; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
       margin: 0; background: #f6f8fa; }
header { background: #24292f; color: #fff; padding: 18px 32px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 0; color: #c9d1d9; font-size: 13px; }
nav { background: #fff; border-bottom: 1px solid var(--line); padding: 8px 32px; position: sticky; top: 0; }
nav a { margin-right: 18px; color: #0969da; text-decoration: none; font-size: 14px; }
main { max-width: 1180px; margin: 0 auto; padding: 8px 24px 48px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 8px 24px 20px;
          margin: 20px 0; }
h2 { border-bottom: 1px solid var(--line); padding-bottom: 6px; }
h3 { margin-bottom: 6px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13.5px; }
th, td { border: 1px solid var(--line); padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.badge { display: inline-block; min-width: 46px; text-align: center; border-radius: 10px; padding: 1px 8px;
         font-size: 12px; font-weight: 600; color: #fff; }
.badge.pass { background: var(--pass); }
.badge.warn { background: var(--warn); }
.badge.fail { background: var(--fail); }
.summary-line { font-size: 16px; margin: 10px 0; }
figure { margin: 10px 0 18px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; background: #fff; }
figcaption { color: var(--muted); font-size: 13px; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(128px, 1fr)); gap: 10px; margin: 8px 0 18px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 6px; font-size: 12px; background: #fff; }
.card img { width: 72px; height: 72px; image-rendering: pixelated; display: block; margin: 0 auto 4px;
            border: 1px solid var(--line); }
.card .text { font-family: ui-monospace, monospace; font-size: 11px; max-height: 6em; overflow: hidden; }
.card.noisy { border-color: var(--fail); } .card.clean { border-color: #8cc8a0; }
.muted { color: var(--muted); } .note { color: var(--muted); font-style: italic; }
ul.key { font-size: 15.5px; padding-left: 20px; } ul.key li { margin: 4px 0; }
details > summary { cursor: pointer; color: #0969da; margin: 6px 0; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th[data-dir="asc"]::after { content: " \\25B2"; }
table.sortable th[data-dir="desc"]::after { content: " \\25BC"; }
input.filter { margin: 6px 0; padding: 4px 8px; width: 280px; border: 1px solid var(--line); border-radius: 6px; }
img.thumb { width: 48px; height: 48px; image-rendering: pixelated; border: 1px solid var(--line); }
b.sug { color: var(--fail); }
table.confusion td.num { text-align: center; }
.cfg { display: grid; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); gap: 0 24px; }
"""


SORT_SCRIPT = """
(function () {
  function key(cell) {
    var v = cell.getAttribute('data-v');
    if (v !== null && v !== '' && !isNaN(v)) return parseFloat(v);
    var t = cell.textContent.trim();
    return (t !== '' && !isNaN(t)) ? parseFloat(t) : t.toLowerCase();
  }
  document.querySelectorAll('table.sortable').forEach(function (table) {
    var heads = table.querySelectorAll('thead th');
    heads.forEach(function (th, i) {
      th.title = 'click to sort';
      th.addEventListener('click', function () {
        var asc = th.getAttribute('data-dir') !== 'asc', body = table.tBodies[0];
        heads.forEach(function (h) { h.removeAttribute('data-dir'); });
        th.setAttribute('data-dir', asc ? 'asc' : 'desc');
        Array.from(body.rows).map(function (r, n) { return [key(r.cells[i]), n, r]; }).sort(function (a, b) {
          var x = a[0], y = b[0], c;
          if (typeof x === typeof y) c = x < y ? -1 : (x > y ? 1 : 0); else c = typeof x === 'number' ? -1 : 1;
          return (asc ? c : -c) || a[1] - b[1];
        }).forEach(function (e) { body.appendChild(e[2]); });
      });
    });
  });
  document.querySelectorAll('input.filter').forEach(function (box) {
    var table = document.getElementById(box.getAttribute('data-table'));
    box.addEventListener('input', function () {
      var q = box.value.trim().toLowerCase();
      Array.from(table.tBodies[0].rows).forEach(function (r) {
        var text = Array.prototype.map.call(r.cells, function (c) { return c.textContent; }).join('\t');
        r.style.display = text.toLowerCase().indexOf(q) >= 0 ? '' : 'none';
      });
    });
  });
})();
"""
