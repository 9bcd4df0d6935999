"""``zoo gallery``: a static HTML site over runs, readable offline from ``file://``.

``DIR/index.html`` shows one card per run (its final sample as a thumbnail: a crop of the image
grid, the piano roll, the scatter plot, a text excerpt or a video's first frame; model, dataset
and headline figures) above the leaderboard (``genzoo.core.leaderboard``), which sorts by any
column on a click; ``DIR/<run>/index.html`` shows the run's sample grids, text samples, loss
curves, confusion matrix, metrics and config. Every image is copied beside its page (the site is
self-contained: move or zip it); the index's one inline script sorts the table, run pages have
none, and no page uses the network.
"""
from __future__ import annotations

import html
import json
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import quote

from genzoo.core import leaderboard as lb
from genzoo.errors import ConfigError

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:14px;margin:1em 0}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3} pre{background:#f7f7f7;padding:1em;overflow-x:auto;font-size:13px}
figure{display:inline-block;margin:0 1em 1em 0;vertical-align:top}
figure img{max-width:520px;border:1px solid #ddd} img.px{image-rendering:pixelated}
figcaption{font-size:13px;color:#555} .note{color:#555;font-size:13px}
.cards{display:flex;flex-wrap:wrap;gap:14px;margin:1em 0 2em}
.card{width:200px;border:1px solid #ddd;border-radius:6px;padding:8px;background:#fff;
 text-decoration:none;color:#222;box-shadow:0 1px 2px rgba(0,0,0,.06)}
.card:hover{border-color:#888} .card img{width:200px;height:200px;object-fit:contain;
 background:#f7f7f7;display:block} .card img.px{image-rendering:pixelated}
.card pre{width:184px;height:184px;margin:0;padding:8px;overflow:hidden;white-space:pre-wrap;
 font-size:11px} .card .empty{width:200px;height:200px;background:#f3f3f3;color:#888;
 display:flex;align-items:center;justify-content:center;font-size:13px}
.card b{display:block;margin-top:6px;font-size:14px;overflow-wrap:anywhere}
.card span{display:block;font-size:12px;color:#555;overflow-wrap:anywhere}
th.sort{cursor:pointer;user-select:none} th.sort:after{content:" \\2195";color:#aaa}
th[aria-sort=ascending]:after{content:" \\2191";color:#222}
th[aria-sort=descending]:after{content:" \\2193";color:#222}
"""
THUMB = 200  # px, the card's picture (a grid crop is at most THUMB_CROP of the grid, scaled)
THUMB_CROP = 0.5  # the top-left share of an image grid a card shows (a few samples, large)
# Sorts the leaderboard by a clicked column: numbers by value (data-v), text as text; a second
# click reverses. No network, no eval, no HTML built from strings.
SORT_SCRIPT = """
document.querySelectorAll("table.board th").forEach(function (th, col) {
  th.classList.add("sort");
  th.addEventListener("click", function () {
    var body = th.closest("table").tBodies[0];
    var down = th.getAttribute("aria-sort") === "ascending";
    th.closest("tr").querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", down ? "descending" : "ascending");
    function key(row) {
      var cell = row.cells[col], v = cell.getAttribute("data-v");
      return v === null ? cell.textContent.trim().toLowerCase() : parseFloat(v);
    }
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a), y = key(b), empty = (x === "" || (typeof x === "number" && isNaN(x)));
      var emptyY = (y === "" || (typeof y === "number" && isNaN(y)));
      if (empty || emptyY) { return empty === emptyY ? 0 : (empty ? 1 : -1); }
      var c = x < y ? -1 : (x > y ? 1 : 0);
      return down ? -c : c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""
MAX_STEP_GRIDS = 4  # the last few periodic grids, besides the final ones


def href(*parts: str) -> str:
    """A relative, URL-encoded link (``./a%20b/index.html``), escaped for an HTML attribute.

    Run folders are named by users: a folder called ``javascript:alert(1)`` must stay a path
    inside the site, never become a URL scheme; spaces, ``#``, ``?``, ``%`` and unicode must
    reach the file they name."""
    return html.escape("./" + "/".join(quote(p, safe="") for p in parts))


def slug_of(run: Path) -> str:
    """The folder name a run gets inside the site: its own resolved name (``RUN/samples/..``
    is RUN), never ``.``, ``..`` or empty, so every page lands inside ``--out``."""
    name = run.resolve().name
    return name if name not in ("", ".", "..") else "run"


def inside(out: Path, name: str) -> Path:
    """``out/name``, refused (one line) if it would resolve outside `out`."""
    target = (out / name).resolve()
    if target.parent != out.resolve():
        raise ConfigError(f"gallery: {name!r} would be written outside --out {out}; "
                          "rename the run folder")
    return target


def page(title: str, body: str, up: str = "", script: str = "") -> str:
    nav = f'<p><a href="{html.escape(up)}index.html">&larr; all runs</a></p>' if up else ""
    js = f"<script>{script}</script>" if script else ""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<link rel=\"icon\" href=\"data:,\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
            f"<body>{nav}<h1>{html.escape(title)}</h1>\n{body}\n{js}</body></html>\n")


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _images(run: Path) -> list[tuple[Path, str]]:
    """(file, caption): final samples first, then the run's own figures, then the last grids."""
    samples = run / "samples"
    pngs = sorted(samples.glob("*.png")) if samples.is_dir() else []
    steps = [p for p in pngs if p.name.startswith("step_")]
    others = [p for p in pngs if p not in steps]
    out = [(p, f"samples: {p.stem}") for p in others]
    out += [(p, p.stem.replace("_", " ")) for p in sorted(run.glob("*.png"))]
    out += [(p, f"samples during training: {p.stem}") for p in steps[-MAX_STEP_GRIDS:]]
    return out


def _audio(run: Path, limit: int = 8) -> list[Path]:
    """Rendered pieces (music families write a WAV per sample), final ones first."""
    samples = run / "samples"
    files = sorted(samples.glob("*.wav"), key=lambda p: (p.name.startswith("step_"), p.name)) \
        if samples.is_dir() else []
    return files[:limit]


def _texts(run: Path, limit: int = 3) -> list[tuple[str, str]]:
    samples = run / "samples"
    files = sorted(samples.glob("*.txt"), key=lambda p: (not p.name.startswith("final"), p.name)) \
        if samples.is_dir() else []
    out = []
    for p in files[:limit]:
        text = p.read_text(encoding="utf-8", errors="replace")
        out.append((p.stem, text[:4000] + (" ..." if len(text) > 4000 else "")))
    return out


def run_page(run: Path, row: lb.Row, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    parts = [f'<p class="note">{html.escape(row.family)} · {html.escape(row.dataset)} · '
             f'run folder <code>{html.escape(str(run))}</code></p>']
    lb_cells = lb.cells(row, run_label="")
    parts.append(_table(list(lb.COLUMNS[:-1]), [[html.escape(c) for c in lb_cells[:-1]]]))
    if row.protocol:
        parts.append(f'<p class="note">FID/KID protocol: {html.escape(row.protocol)}</p>')
    figures = []
    for i, (src, caption) in enumerate(_images(run)):
        name = f"{i:02d}-{src.name}"
        shutil.copyfile(src, inside(out, name))
        px = ' class="px"' if src.parent.name == "samples" else ""  # grids: crisp pixels
        figures.append(f'<figure><img{px} src="{href(name)}" alt="{html.escape(caption)}">'
                       f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    if figures:
        parts.append("<h2>Samples and figures</h2>" + "".join(figures))
    players = []
    for i, src in enumerate(_audio(run)):
        name = f"audio-{i:02d}-{src.name}"
        shutil.copyfile(src, inside(out, name))
        players.append(f'<figure><audio controls preload="none" src="{href(name)}"></audio>'
                       f"<figcaption>{html.escape(src.stem)}</figcaption></figure>")
    if players:
        parts.append("<h2>Listen</h2>" + "".join(players))
    texts = _texts(run)
    if texts:
        parts.append("<h2>Text samples</h2>" + "".join(
            f"<h3>{html.escape(stem)}</h3><pre>{html.escape(t, quote=False)}</pre>" for stem, t in texts))
    metrics = _metric_rows(run)
    if metrics:
        parts.append("<h2>Metrics</h2>" + _table(["metric", "value"], metrics))
    cfg = lb._json(run / "config.json")
    if cfg:
        parts.append("<h2>Config</h2><pre>" + html.escape(json.dumps(cfg, indent=2), quote=False) + "</pre>")
    (out / "index.html").write_text(page(f"{row.model} — {run.name}", "\n".join(parts), "../"),
                                    encoding="utf-8")


def _final_sample(run: Path) -> Path | None:
    """The run's last sample: a final one (``zoo run``, ``zoo sample``) before the newest grid
    written during training; a picture (PNG, GIF) before a text."""
    samples = run / "samples"
    if not samples.is_dir():
        return None
    for patterns in (("*.png", "*.gif"), ("*.txt",)):
        # the plain view first: final.png before final-attention.png, final-0.png...
        files = sorted((p for pat in patterns for p in samples.glob(pat)),
                       key=lambda p: (p.stem != "final", p.name))
        final = [p for p in files if not p.name.startswith("step_")]
        steps = [p for p in files if p.name.startswith("step_")]
        if final or steps:
            return (final or steps[::-1])[0]
    return None


def thumbnail(src: Path, dest: Path, grid: bool) -> bool:
    """A THUMB x THUMB picture of `src`: the top-left THUMB_CROP of an image grid (a few
    samples, large enough to see), or the whole figure (piano roll, scatter) scaled to fit;
    a GIF's first frame (a video's poster). False if the file cannot be read as an image."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(src) as im:
            im.seek(0)
            im = im.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError):
        return False
    if grid:
        side = max(1, int(min(im.size) * THUMB_CROP))
        im = im.crop((0, 0, side, side)).resize((THUMB, THUMB), Image.Resampling.NEAREST)
    else:
        im.thumbnail((THUMB, THUMB), Image.Resampling.LANCZOS)
    im.save(dest, format="PNG")
    return True


def headline(row: lb.Row) -> str:
    """The card's figures: what the run has measured, most telling first."""
    parts = []
    if row.fid is not None:
        parts.append(f"FID {row.fid:.2f}")
    if row.nll:
        parts.append(row.nll)
    if row.accuracy is not None:
        parts.append(f"accuracy {row.accuracy:.1%}")
    if row.kid is not None and row.fid is None:
        parts.append(f"KID {row.kid:.4f}")
    if not parts and row.params:
        parts.append(f"{lb.cells(row)[2]} params")
    return " · ".join(parts)


def card(run: Path, row: lb.Row, slug: str, out: Path) -> str:
    """One run's card for the index: thumbnail (written as SLUG/thumb.png) or text excerpt,
    model, dataset, headline figures; the whole card links to the run's page."""
    src = _final_sample(run)
    picture = '<div class="empty">no samples yet</div>'
    if src is not None and src.suffix == ".txt":
        text = src.read_text(encoding="utf-8", errors="replace")[:600]
        picture = f"<pre>{html.escape(text, quote=False)}</pre>"
    elif src is not None:
        modality = str((lb._json(run / "config.json") or {}).get("modality", "image"))
        grid = modality == "image" and src.suffix == ".png"
        if thumbnail(src, inside(out / slug, "thumb.png"), grid):
            px = ' class="px"' if grid else ""
            alt = f"{row.model}: {src.stem}"
            picture = f'<img{px} src="{href(slug, "thumb.png")}" alt="{html.escape(alt)}">'
    figures = headline(row)
    return (f'<a class="card" href="{href(slug, "index.html")}">{picture}'
            f"<b>{html.escape(row.model)}</b><span>{html.escape(row.dataset)} · "
            f"{html.escape(row.family)}</span>"
            + (f"<span>{html.escape(figures)}</span>" if figures else "") + "</a>")


def _sort_values(r: lb.Row) -> list[float | None]:
    """Per leaderboard column, the number it sorts by (None: sort as text)."""
    nll = None
    if r.nll:
        try:
            nll = float(r.nll.split()[0])
        except ValueError:
            nll = None
    # by column name, so a column added to lb.COLUMNS sorts as text instead of shifting the rest
    numeric = {"params": r.params, "NLL": nll, "FID": r.fid, "KID": r.kid,
               "accuracy": r.accuracy, "train samples/s": r.train_samples_s,
               "sample ms": r.sample_ms}
    return [numeric.get(c) for c in lb.COLUMNS]


def _board(rows: list[tuple[lb.Row, str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in lb.COLUMNS)
    body = []
    for r, slug in rows:
        cells = [html.escape(c) for c in lb.cells(r)[:-1]] + [
            f'<a href="{href(slug, "index.html")}">{html.escape(slug)}</a>']
        tds = []
        for c, v in zip(cells, _sort_values(r)):
            attr = "" if v is None else f' data-v="{float(v)!r}"'
            tds.append(f"<td{attr}>{c}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return (f'<table class="board"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def _metric_rows(run: Path) -> list[list[str]]:
    rows: list[list[str]] = []
    ev = lb._json(run / "eval.json") or {}
    for k, v in ev.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            rows.append([html.escape(f"eval ({ev.get('split', '?')}): {k}"), f"{v:.6g}"])
    tests = [m for m in lb._metrics(run) if m.get("split") == "test"]
    if tests:
        for k, v in tests[-1].items():
            if isinstance(v, (int, float)) and k not in ("step",):
                rows.append([html.escape(f"test after training: {k}"), f"{v:.6g}"])
    return rows


def build(paths: list[str | Path], out: str | Path) -> Path:
    """Write the site; returns the index path."""
    out = Path(out)
    runs = lb.find_runs(paths or ["runs"])
    out.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[lb.Row, str, Path]] = []
    used: set[str] = set()
    for run in runs:
        r = lb.row(run)
        base = slug_of(run)
        slug, k = base, 2
        while slug in used or slug == "index.html":
            slug, k = f"{base}-{k}", k + 1
        used.add(slug)
        run_page(run, r, inside(out, slug))
        rows.append((r, slug, run))
    rows.sort(key=lambda rs: (rs[0].dataset, rs[0].family, rs[0].model, rs[0].run))
    cards = "".join(card(run, r, slug, out) for r, slug, run in rows)
    table = _board([(r, slug) for r, slug, _ in rows])
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in lb.protocols([r for r, _, _ in rows]))
    body = (f'<p class="note">{len(rows)} runs. Gathered from run folders by <code>zoo gallery</code>; '
            "figures come from each run's eval.json (<code>zoo eval</code>), bench.json "
            "(<code>zoo bench RUN</code>) or, marked (log), its own training log.</p>"
            f'<div class="cards">{cards}</div><h2>Leaderboard</h2>'
            '<p class="note">Click a column to sort by it.</p>' + table
            + (f"<h2>FID/KID and recognisability protocols</h2><ul>{notes}</ul>" if notes else ""))
    index = out / "index.html"
    index.write_text(page("genzoo gallery", body, script=SORT_SCRIPT), encoding="utf-8")
    return index
