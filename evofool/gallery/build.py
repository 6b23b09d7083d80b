"""``export_gallery``: writes a run's gallery folder (images, contact sheets, plots, manifests, page).

Layout of ``runs/NAME/gallery/``::

    images/0003-three.png          the champion at the model's resolution (the archived file, copied)
    images/0003-three-x8.png       nearest-neighbour enlargement (small images only)
    contact-sheet-01.png ...       grids of at most 100 classes, class and confidence under each
    progress.png                   champion confidence over generations (+ classes ≥ 99 %)
    confidences.png                histogram of the final confidences
    manifest.json, manifest.csv    classes, files, run facts
    index.html                     the page: sortable, filterable, self-contained

The live gallery (``live=True``, refreshed at every checkpoint of a run) keeps images and
contact-sheet pages whose champions did not change, and skips enlargements and contact
sheets until the run has finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from evofool.errors import EvofoolError
from evofool.gallery import images as gi
from evofool.gallery.html import Row, render_index
from evofool.gallery.manifest import build_manifest, read_manifest, write_manifest
from evofool.gallery.rundata import Champion, RunData, load_run, select
from evofool.runfolder import champion_filename

IMAGES_DIR = "images"
INDEX = "index.html"
PROGRESS_PLOT = "progress.png"
HISTOGRAM_PLOT = "confidences.png"
WORKERS = min(4, os.cpu_count() or 1)


@dataclass
class ExportResult:
    """What an export wrote.

    Attributes:
        out: The gallery folder.
        classes: Classes exported.
        images: Image files written (native + enlarged); reused ones not counted.
        reused: Classes whose images were kept from the previous export.
        sheets: Contact-sheet file names.
        sheets_rendered: Contact-sheet pages (re)rendered this time.
        plots: Plot file names.
        seconds: Wall time of the export.
    """

    out: Path
    classes: int
    images: int = 0
    reused: int = 0
    sheets: list[str] = field(default_factory=list)
    sheets_rendered: int = 0
    plots: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _stamp(champion: Champion) -> str:
    """Identifies a champion's content: a new champion always has a higher log-probability.

    (Not the file's mtime: the run re-writes every champion PNG at each checkpoint.)
    """
    return f"{champion.generation}:{champion.log_prob!r}:{champion.source.stat().st_size}"


def _open_png(path: Path) -> Image.Image:
    """Loads an image fully (so the file can be replaced afterwards)."""
    try:
        with Image.open(path) as im:
            im.load()
            return im
    except (UnidentifiedImageError, OSError) as exc:
        raise EvofoolError(f"{path} is not a readable image ({exc.__class__.__name__})") from None


def _write_class(run: RunData, ch: Champion, name: str, stamp: str, out: Path, scale: int | None,
                 enlarge: bool) -> tuple[dict, Image.Image]:
    """Copies one champion PNG (and writes its enlargement); its manifest entry and image."""
    image = _open_png(ch.source)
    s = scale if scale is not None else gi.default_scale(image.height, image.width)
    gi.copy_file(ch.source, out / IMAGES_DIR / name)
    enlarged = None
    if s > 1 and enlarge:
        enlarged = f"{IMAGES_DIR}/{gi.enlarged_name(name, s)}"
        gi.save_png(gi.enlarge(image, s), out / enlarged, compress_level=1)
    entry = {"class": ch.index, "name": ch.name, "confidence": ch.confidence, "log_prob": ch.log_prob,
             "generation": ch.generation, "image": f"{IMAGES_DIR}/{name}", "enlarged": enlarged, "scale": s,
             "width": image.width, "height": image.height,
             "source": ch.file, "source_stamp": stamp}
    return entry, image


def _reusable(old: dict | None, name: str, stamp: str, out: Path, scale: int | None, enlarge: bool) -> bool:
    """Whether the previous export's files for a class still show the same champion."""
    return bool(old and old.get("source_stamp") == stamp and old.get("image") == f"{IMAGES_DIR}/{name}"
                and (scale is None or old.get("scale") == scale)
                and (not enlarge or old.get("enlarged") is not None or old.get("scale") == 1)
                and all((out / f).is_file() for f in (old["image"], old.get("enlarged")) if f))


def _export_images(run: RunData, chosen: list[Champion], out: Path, scale: int | None, enlarge: bool,
                   previous: dict[int, dict], pool: ThreadPoolExecutor,
                   result: ExportResult) -> tuple[list[dict], dict[int, Image.Image]]:
    """Writes native (and enlarged) PNGs, reusing unchanged ones from ``previous``.

    Returns:
        One manifest entry per class, and the images it opened (class → image).
    """
    (out / IMAGES_DIR).mkdir(exist_ok=True)
    entries: list[dict | None] = []
    jobs = {}
    for i, ch in enumerate(chosen):
        name = champion_filename(ch.index, ch.name, run.name_width)
        stamp = _stamp(ch)
        old = previous.get(ch.index)
        if _reusable(old, name, stamp, out, scale, enlarge):
            entries.append({**old, "confidence": ch.confidence, "log_prob": ch.log_prob, "generation": ch.generation})
            result.reused += 1
        else:
            entries.append(None)
            jobs[i] = pool.submit(_write_class, run, ch, name, stamp, out, scale, enlarge)
    loaded = {}
    for i, job in jobs.items():
        entries[i], loaded[chosen[i].index] = job.result()
        result.images += 1 + (entries[i]["enlarged"] is not None)
    return entries, loaded


def _sheet_titles(run: RunData, page: int, pages: int, what: str) -> tuple[str, str]:
    """Header lines of a contact-sheet page (no generation count, so unchanged pages can be reused)."""
    cfg = run.config
    where = f" · page {page}/{pages}" if pages > 1 else ""
    return (f"{run.folder.path.resolve().name} · {what}{where}",
            f"{cfg.get('model')} · {cfg.get('encoding')} · seed {cfg.get('seed')}")


def _export_sheets(run: RunData, chosen: list[Champion], entries: list[dict], out: Path, what: str,
                   previous: dict | None, loaded: dict[int, Image.Image], pool: ThreadPoolExecutor,
                   result: ExportResult) -> list[dict]:
    """Writes the contact-sheet pages whose content changed; returns their manifest entries."""
    old_keys = {s.get("file"): s.get("key") for s in previous.get("contact_sheets", [])} if previous else {}
    pages = gi.paginate(len(chosen))
    sheets, jobs = [], []
    for number, span in enumerate(pages, 1):
        page = [chosen[i] for i in span]
        titles = _sheet_titles(run, number, len(pages), what)
        key = hashlib.sha256(json.dumps([*titles] + [entries[i]["source_stamp"] for i in span]).encode()).hexdigest()[:16]
        name = gi.sheet_name(number)
        if old_keys.get(name) != key or not (out / name).is_file():
            jobs.append(pool.submit(_write_sheet, page, loaded, titles, out / name))
        sheets.append({"file": name, "classes": [c.index for c in page], "key": key})
    for job in jobs:
        job.result()
    result.sheets_rendered = len(jobs)
    return sheets


def _write_sheet(page: list[Champion], loaded: dict[int, Image.Image], titles: tuple[str, str],
                 path: Path) -> None:
    """Renders and saves one contact-sheet page."""
    tiles = [gi.tile_image(loaded.get(c.index) or _open_png(c.source)) for c in page]
    gi.save_png(gi.render_sheet(page, tiles, *titles), path, compress_level=1)


def _export_plots(run: RunData, out: Path) -> list[str]:
    from evofool.gallery.plots import histogram_plot, progress_plot

    written = []
    if progress_plot(run.log, run.num_classes, out / PROGRESS_PLOT):
        written.append(PROGRESS_PLOT)
    histogram_plot(run.champions, run.num_classes, out / HISTOGRAM_PLOT)
    written.append(HISTOGRAM_PLOT)
    return written


def _remove_stale(out: Path, previous: dict | None, keep: set[str]) -> None:
    """Deletes files the previous export listed that this one no longer has (and nothing else)."""
    if not previous:
        return
    listed = [f for e in previous.get("classes", []) for f in (e.get("image"), e.get("enlarged")) if f]
    listed += [s.get("file") for s in previous.get("contact_sheets", []) if s.get("file")]
    listed += [p for p in previous.get("plots", []) if isinstance(p, str)]
    root = out.resolve()
    for rel in set(listed) - keep:
        path = (out / rel).resolve()
        if path.parent in (root, root / IMAGES_DIR) and path.is_file():
            path.unlink()


def export_gallery(run_dir: str | Path, out: str | Path | None = None, *, top: int | None = None,
                   classes: str | list | None = None, scale: int | None = None,
                   live: bool = False) -> ExportResult:
    """Writes a run's gallery.

    Args:
        run_dir: The run folder.
        out: The gallery folder (default ``RUN/gallery``).
        top: Only the ``top`` most confident classes (sorted best first).
        classes: Only these classes (``"3,5,seven"`` or a list), in this order.
        scale: Enlargement factor (default: so that the long side is ≥ 224 px; 1: none).
        live: The refresh at a checkpoint of a running job: keep the images and sheet pages
            of unchanged champions, and until the run has finished write only the page,
            native PNGs, manifests and plots (no enlargements, no contact sheets).

    Raises:
        EvofoolError: not a run folder, missing or damaged files, a bad selection or scale.
    """
    start = time.perf_counter()
    if scale is not None and scale < 1:
        raise EvofoolError(f"--scale must be at least 1 (got {scale})")
    run = load_run(run_dir)
    chosen = select(run, classes, top)
    out = Path(out) if out is not None else run.folder.path / "gallery"
    if out.exists() and not out.is_dir():
        raise EvofoolError(f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    previous = read_manifest(out, strict=False)
    old = previous if (live and previous and previous["run"].get("config_hash") == run.config_hash) else None
    full = not live or run.finished
    result = ExportResult(out=out, classes=len(chosen))

    what = (f"top {len(chosen)} by confidence" if top is not None
            else "chosen classes" if classes is not None else f"all {len(chosen)} classes")
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:  # PNG coding and file I/O release the GIL
        entries, loaded = _export_images(run, chosen, out, scale, full,
                                         {e["class"]: e for e in old["classes"]} if old else {}, pool, result)
        sheets = _export_sheets(run, chosen, entries, out, what, old, loaded, pool, result) if full else []
    result.sheets = [s["file"] for s in sheets]
    result.plots = _export_plots(run, out)

    export = {"top": top, "classes": [c.index for c in chosen] if classes is not None else None,
              "scale": scale, "live": live, "complete": full}
    write_manifest(out, build_manifest(run, entries, sheets, result.plots, export))
    rows = [Row(index=e["class"], name=e["name"], confidence=e["confidence"], log_prob=e["log_prob"],
                generation=e["generation"], image=e["image"], enlarged=e["enlarged"], width=e["width"],
                height=e["height"]) for e in entries]
    page = render_index(run, rows, result.plots, result.sheets, live)
    tmp = out / (INDEX + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out / INDEX)

    keep = {f for e in entries for f in (e["image"], e["enlarged"]) if f} | set(result.sheets) | set(result.plots)
    _remove_stale(out, previous, keep)
    result.seconds = time.perf_counter() - start
    return result
