"""Static pages (``index.html``) of a render folder, an evaluation folder and a training run folder.

One template (``jaxcam/viz/page/page.html`` with ``page.css`` and ``page.js`` inlined) and a few
builders of its body: a grid of images x columns whose cells lay a heatmap over the original (an
opacity slider, a class filter, one column alone, a large view with original / heatmap / overlay,
arrow-key navigation), sortable tables with a small bar per number, and a drill-down per image.
No server and no network: the page is one file, its images are referenced by relative paths, so the
folder can be moved or zipped and opened from ``file://``.

    pages.save_cell(out, "cat", "grad_cam", heat_rgb, {"explained": "tabby", "score": 0.91})
    pages.render_page(out, ["cat", "dog"], ["grad_cam", "score_cam"])   # <out>/index.html

Every page is rebuilt from the files in its folder (not from one process's memory), so a resumed or
multi-process job writes the same page as an uninterrupted one; it is written atomically
(`jaxcam.jobs`): a reader sees the old page or the new one, never half of one.
"""
from __future__ import annotations

import dataclasses
import html
import json
import math
import os
import re
import string
from importlib import resources
from typing import Dict, Optional, Sequence
from urllib.parse import quote

import numpy as np
from PIL import Image, PngImagePlugin

from jaxcam import jobs

INDEX = "index.html"
ASSETS = "page"  # render: <out>/page/<image>.jpg (original) and <out>/page/<image>_<method>.png (heatmap)
INFO_KEY = "jaxcam"  # the PNG text chunk holding a cell's JSON (class, score, ...): one file per cell
Z95 = 1.959963984540054  # two-sided 95 % normal quantile, for mean +- Z95 * sd / sqrt(n)
# Wall-clock fields: their cells are marked class="timing" (they differ between two runs of the same job).
TIMING = ("seconds", "images_per_second", "trained_minutes", "wall_seconds", "s/img (map)")


@dataclasses.dataclass
class Cell:
    """One grid cell: relative paths of the original and its heatmap, a title (large view), caption lines."""

    orig: str
    heat: str
    title: str = ""
    caption: Sequence[str] = ()


# ------------------------------------------------------------------------------ files

def safe_name(name: str) -> str:
    """A file name for any label (a layer path like ``_blocks/15`` becomes ``_blocks_15``)."""
    return re.sub(r"[^\w.-]", "_", name)


def save_image(path: str, rgb: np.ndarray, info: Optional[dict] = None) -> None:
    """Write an RGB uint8 image atomically: ``.jpg`` (originals) or ``.png``, with `info` as JSON text in the PNG."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    image = Image.fromarray(np.asarray(rgb, np.uint8))
    with jobs.atomic_path(path) as tmp:
        if path.endswith(".jpg"):
            image.save(tmp, format="JPEG", quality=90)
        else:
            meta = PngImagePlugin.PngInfo()
            if info is not None:
                meta.add_text(INFO_KEY, json.dumps(info))
            image.save(tmp, format="PNG", pnginfo=meta)


def read_info(path: str) -> dict:
    """The JSON a cell image carries (`save_image`'s `info`); {} when it has none."""
    with Image.open(path) as image:  # reads the header and text chunks, not the pixels
        return json.loads(image.text.get(INFO_KEY, "{}"))


def write_page(folder: str, title: str, body: str, subtitle: str = "") -> str:
    """Fill the template and write ``<folder>/index.html`` atomically; returns its path."""
    here = resources.files("jaxcam.viz") / "page"
    text = string.Template((here / "page.html").read_text()).substitute(
        title=html.escape(title), subtitle=html.escape(subtitle), body=body,
        style=(here / "page.css").read_text(), script=(here / "page.js").read_text())
    path = os.path.join(folder, INDEX)
    jobs.write_bytes(path, text.encode())
    return path


# ---------------------------------------------------------------------------- pieces

def esc(value) -> str:
    return html.escape(str(value), quote=True)


def url(path: str) -> str:
    """A relative path as a URL (spaces, #, ? and non-ASCII escaped)."""
    return quote(path.replace(os.sep, "/"))


def number(value, digits: int = 4) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def controls(classes: Optional[Dict[str, Sequence[str]]] = None, alpha: float = 0.5) -> str:
    """The opacity slider, and a class filter over {"pred": classes, "true": classes} when given."""
    parts = [f'<label>overlay opacity <input id="opacity" type="range" min="0" max="1" step="0.05" '
             f'value="{alpha}"></label>']
    if classes and any(classes.values()):
        options = ['<option value="">all classes</option>']
        for kind, heading in (("pred", "predicted"), ("true", "true")):
            names = classes.get(kind) or []
            if names:
                options.append(f'<optgroup label="{heading}">' + "".join(
                    f'<option value="{kind}:{esc(n)}">{heading} {esc(n)}</option>' for n in names) + "</optgroup>")
        parts.append(f'<label>class <select id="class-filter">{"".join(options)}</select></label>')
    parts.append('<span class="hint">click a column title to show it alone; click a cell (or Enter) for a large '
                 'view; arrow keys move</span>')
    return f'<div class="controls">{"".join(parts)}</div>'


# Grid images load when scrolled near (a page of 50 x 8 cells opens at once; hidden drill-downs cost nothing).
LAZY = ' loading="lazy" decoding="async"'


def grid(rows: list, columns: Sequence[str], first: str = "image") -> str:
    """A table of images x `columns`. rows: (name, {data attribute: value}, [Cell or None per column])."""
    head = f"<th>{esc(first)}</th>" + "".join(
        f'<th class="method" data-col="{i}" title="show this column alone">{esc(c)}</th>'
        for i, c in enumerate(columns))
    body = []
    for name, attrs, cells in rows:
        data = "".join(f' data-{k}="{esc(v)}"' for k, v in attrs.items() if v is not None)
        tds = []
        for i, cell in enumerate(cells):
            if cell is None:
                tds.append(f'<td class="missing" data-col="{i}">not rendered</td>')
                continue
            caption = "".join(f"<div>{line}</div>" for line in cell.caption)
            tds.append(f'<td class="cell" tabindex="0" data-col="{i}" data-title="{esc(cell.title)}">'
                       f'<div class="stack"><img class="orig" src="{url(cell.orig)}" alt="{esc(name)}"{LAZY}>'
                       f'<img class="heat" src="{url(cell.heat)}" alt="{esc(columns[i])}"{LAZY}></div>'
                       f'<div class="caption">{caption}</div></td>')
        label = "<br>".join(esc(line) for line in str(name).split("\n"))
        body.append(f'<tr class="row"{data}><td class="name">{label}</td>{"".join(tds)}</tr>')
    return (f'<table class="grid"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>')


def table(headers: Sequence[str], rows: Sequence[Sequence], bars: bool = True, sortable: bool = True,
          table_id: str = "") -> str:
    """A table whose numeric cells carry their value (for sorting) and a bar (value / column maximum).

    A cell is a string (text), a float, or (shown text, float value). Cells of a column, or rows
    whose first cell, is named in `TIMING` get class "timing"."""
    def value(cell):
        if isinstance(cell, tuple):
            return cell[1]
        return cell if isinstance(cell, (int, float)) and not isinstance(cell, bool) else None

    top = {}
    for j in range(len(headers)):
        column = [value(r[j]) for r in rows if value(r[j]) is not None and math.isfinite(value(r[j]))]
        top[j] = max((abs(v) for v in column), default=0.0)
    lines = []
    for r in rows:
        tds = []
        for j, cell in enumerate(r):
            v = value(cell)
            timing = " timing" if headers[j] in TIMING or str(r[0]) in TIMING else ""
            if v is None:
                tds.append(f'<td class="text{timing}">{cell if isinstance(cell, Markup) else esc(cell)}</td>')
                continue
            shown = cell[0] if isinstance(cell, tuple) else (str(cell) if isinstance(cell, int) else number(cell))
            bar = (f'<div class="bar" style="width:{100 * abs(v) / top[j]:.1f}%"></div>'
                   if bars and top[j] and math.isfinite(v) else "")
            tds.append(f'<td class="num{timing}" data-value="{v if math.isfinite(v) else ""}">{shown}{bar}</td>')
        lines.append(f'<tr>{"".join(tds)}</tr>')
    ident = f' id="{esc(table_id)}"' if table_id else ""
    return (f'<table{ident} class="{"sortable" if sortable else ""}"><thead><tr>'
            + "".join(f"<th>{esc(h)}</th>" for h in headers)
            + f'</tr></thead><tbody>{"".join(lines)}</tbody></table>')


class Markup(str):
    """HTML that `table` puts into a cell as it is (a link), not escaped."""


def mean_ci(values) -> tuple:
    """(mean, half-width of the 95 % confidence interval: 1.96 sd / sqrt(n), sd with n - 1) of finite values."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return math.nan, math.nan
    half = Z95 * v.std(ddof=1) / math.sqrt(len(v)) if len(v) > 1 else math.nan
    return float(v.mean()), float(half)


# ---------------------------------------------------------------------------- render

def original_path(out: str, name: str) -> str:
    return os.path.join(out, ASSETS, f"{safe_name(name)}.jpg")


def cell_path(out: str, name: str, method: str) -> str:
    return os.path.join(out, ASSETS, f"{safe_name(name)}_{safe_name(method)}.png")


def save_cell(out: str, name: str, method: str, heat: np.ndarray, info: dict) -> None:
    """One render cell: the method's heatmap (RGB) of image `name`, carrying `info` (explained class, score...)."""
    save_image(cell_path(out, name, method), heat, info)


def render_page(out: str, names: Sequence[str], methods: Sequence[str], alpha: float = 0.5,
                subtitle: str = "") -> str:
    """``<out>/index.html`` of a render: rows = `names` (in order) whose cells exist, columns = `methods`."""
    rows, pred, true = [], set(), set()
    for name in names:
        cells, info = [], {}
        for m in methods:
            path = cell_path(out, name, m)
            if not (os.path.exists(path) and os.path.exists(original_path(out, name))):
                cells.append(None)
                continue
            info = read_info(path)
            explained = info.get("explained", "?")
            score = info.get("score")
            caption = [f'{esc(explained)} <span class="score">{number(score, 2)}</span>']
            cells.append(Cell(os.path.relpath(original_path(out, name), out), os.path.relpath(path, out),
                              f"{name} | {m} | {info.get('heading', '')}", caption))
        if all(c is None for c in cells):
            continue
        label, predicted = info.get("label"), info.get("predicted")
        pred.add(predicted) if predicted is not None else None
        true.add(label) if label is not None else None
        title = name + (f"\ntrue {label}" if label is not None else "") + (
            f"\npredicted {predicted}" if predicted is not None else "")
        rows.append((title, {"pred": predicted, "true": label}, cells))
    body = (controls({"pred": sorted(pred), "true": sorted(true)}, alpha) + grid(rows, methods)
            if rows else "<p>nothing rendered yet</p>")
    return write_page(out, "jaxcam render", body, subtitle or f"{len(rows)} images x {len(methods)} methods")


# --------------------------------------------------------------------------- evaluate

def evaluate_page(out: str, cache: str, files: Sequence[str], rows: list, table_values: dict,
                  columns: Sequence[tuple], maps_of) -> str:
    """``<out>/index.html`` of an evaluation: the summary `rows` (method x metric, mean and 95 % CI from
    the per-image values of `table_values`), sortable, and a drill-down per image: every method's map
    (``maps_of(method, file)`` -> path of its heatmap, or None) and its per-image scores from `cache`."""
    keys = [(k, t) for k, t in columns if any(math.isfinite(r.get(k, math.nan)) for r in rows)]
    headers = ["method", "images"] + [t for _, t in keys] + ["s/img (map)"]
    lines = []
    for r in rows:
        values = table_values.get(r["method"], {})
        line = [r["method"] if not r.get("error") else Markup(f'{esc(r["method"])} <b>FAILED</b>: {esc(r["error"])}'),
                r["images"]]
        for k, _ in keys:
            if k not in values:
                line.append((number(math.nan), math.nan))
                continue
            per_image = np.asarray(values[k], np.float64).reshape(len(values[k]), -1).mean(axis=1)
            mean, half = mean_ci(per_image)
            line.append((f'{number(mean)} <span class="ci">± {number(half)}</span>', mean))
        line.append(r.get("seconds_per_image", math.nan))
        lines.append(line)
    body = ["<h2>Metrics (mean ± half-width of the 95 % confidence interval over the images)</h2>",
            table(headers, lines, table_id="metrics")]
    if os.path.exists(os.path.join(out, "curves.png")):
        body.append('<h2>Deletion and insertion curves</h2><img class="figure" src="curves.png" alt="curves">')
    methods = [r["method"] for r in rows if not r.get("error")]
    sections, links = [], []
    for n, f in enumerate(files):
        ident = f"img-{n}"
        cells = []
        for m in methods:
            heat = maps_of(m, f)
            orig = maps_of(None, f)
            path = os.path.join(cache, m, os.path.splitext(f)[0] + ".npz")
            if heat is None or orig is None or not os.path.exists(path):
                cells.append(None)
                continue
            scores = dict(np.load(path))
            caption = [f"{esc(t.split(' (')[0])}: {number(float(np.mean(scores[k])))}" for k, t in keys if k in scores]
            cells.append(Cell(os.path.relpath(orig, out), os.path.relpath(heat, out), f"{f} | {m}", caption))
        if all(c is None for c in cells):
            continue
        links.append(f'<a href="#{ident}">{esc(f)}</a>')
        sections.append(f'<section class="drill" id="{ident}"><h3>{esc(f)}</h3>{grid([(f, {}, cells)], methods)}'
                        "</section>")
    if sections:
        body += ["<h2>Per image: every method's map and its scores</h2>", controls(),
                 f'<div class="drill-list">{"".join(links)}</div>'] + sections
    return write_page(out, "jaxcam evaluate", "\n".join(body), f"{len(files)} images x {len(rows)} methods")


# --------------------------------------------------------------------------- training

MISCLASSIFIED = "misclassified.json"  # in <run>/page/: the gallery's entries (written after their images)


def save_gallery(out: str, images: np.ndarray, titles: Sequence[str], layers: Sequence[str], heats: list) -> None:
    """The misclassified gallery of a run: ``page/wrong_<i>.jpg`` and ``page/wrong_<i>_<layer>.png``
    (heatmaps[layer][i], RGB), then the index ``page/misclassified.json``."""
    entries = []
    for i, (image, t) in enumerate(zip(images, titles)):
        orig = os.path.join(ASSETS, f"wrong_{i}.jpg")
        save_image(os.path.join(out, orig), image)
        stages = {}
        for layer, heat in zip(layers, heats):
            stages[layer] = os.path.join(ASSETS, f"wrong_{i}_{safe_name(layer)}.png")
            save_image(os.path.join(out, stages[layer]), heat[i])
        entries.append({"title": t, "orig": orig, "stages": stages})
    jobs.write_bytes(os.path.join(out, ASSETS, MISCLASSIFIED), json.dumps({"layers": list(layers),
                                                                           "images": entries}).encode())


def _load_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def train_page(out: str) -> str:
    """``<run>/index.html`` from what the run folder holds now: config, summary, curves and the epoch
    table, confusion matrix, per-class table, misclassified gallery with CAMs per stage, checkpoints."""
    body = []
    summary = _load_json(os.path.join(out, "summary.json"))
    if summary:
        body += ["<h2>Summary</h2>", table(["key", "value"], [[k, v] for k, v in summary.items()], bars=False,
                                           sortable=False)]
    history = _load_json(os.path.join(out, "metrics.json")) or []
    if history:
        body.append("<h2>Per epoch</h2>")
        if os.path.exists(os.path.join(out, "curves.png")):
            body.append('<img class="figure" src="curves.png" alt="curves">')
        keys = []
        for h in history:
            keys += [k for k in h if k not in keys]
        body.append(table(keys, [[h.get(k, math.nan) if isinstance(h.get(k), (int, float)) else str(h.get(k, ""))
                                  for k in keys] for h in history], bars=False, table_id="epochs"))
    per_class = _load_json(os.path.join(out, "per_class.json"))
    if per_class:
        body.append(f"<h2>Validation: accuracy {number(per_class.get('accuracy'))} "
                    f"({per_class.get('images')} images)</h2>")
        if os.path.exists(os.path.join(out, "confusion.png")):
            body.append('<img class="figure" src="confusion.png" alt="confusion matrix">')
        body.append(table(["class", "images", "correct", "accuracy"],
                          [[r["class"], r["images"], r["correct"],
                            r["accuracy"] if r["accuracy"] is not None else math.nan]
                           for r in per_class.get("per_class", [])], table_id="per-class"))
    gallery = _load_json(os.path.join(out, ASSETS, MISCLASSIFIED))
    if gallery and gallery["images"]:
        layers = gallery["layers"]
        rows = [(e["title"], {}, [Cell(e["orig"], e["stages"][layer], f"{e['title']} | {layer}".replace("\n", " | "))
                                  for layer in layers]) for e in gallery["images"]]
        body += ["<h2>Misclassified (most confident first): Grad-CAM of the predicted class per stage</h2>",
                 controls(), grid(rows, layers)]
    links = []
    for kind in ("best", "last"):
        folder = os.path.join(out, "checkpoints", kind)
        steps = sorted((d for d in os.listdir(folder) if d.isdigit()), key=int) if os.path.isdir(folder) else []
        links += [f'<li><a href="{url(os.path.join("checkpoints", kind, d))}/">{kind}: epoch {int(d) + 1}</a></li>'
                  for d in steps]
    if links:
        body.append(f'<h2>Checkpoints</h2><ul>{"".join(links)}</ul>')
    if os.path.exists(os.path.join(out, "config.yaml")):
        with open(os.path.join(out, "config.yaml")) as f:
            body.append(f'<h2>Config</h2><p><a href="config.yaml">config.yaml</a></p><pre>{esc(f.read())}</pre>')
    done = "finished" if summary else f"epochs so far: {len(history)} (reload to follow the run)"
    return write_page(out, "jaxcam training run", "\n".join(body), done)
