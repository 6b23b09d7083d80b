"""``export_run_gallery``: writes a run's gallery folder (images, contact sheets, plots, manifests, page).

Layout of ``runs/NAME/gallery/``::

    images/0003-three.png          the champion at the model's resolution (the archived file, copied)
    images/0003-three-x8.png       nearest-neighbour enlargement (small images only)
    contact-sheet-01.png ...       grids of at most 100 classes, class and confidence under each
    progress.png                   champion confidence over generations (+ classes ≥ 99 %)
    confidences.png                histogram of the final confidences (activations.png: a unit run's)
    manifest.json, manifest.csv    classes, files, run facts
    index.html                     the page: sortable, filterable, self-contained

The live gallery (``live=True``, refreshed at every checkpoint of a run) keeps images and
contact-sheet pages whose champions did not change, and skips enlargements and contact
sheets until the run has finished.

A gallery folder is the exporter's own: it writes into a new or empty folder or a gallery
of the same run (its manifest names the run), never through a link, one exporter at a time
(``.lock``), and deletes only files it listed in its own manifest whose names are its own
(``OWN_FILES``). ``force`` writes into any folder, and then deletes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from evofool import safefs
from evofool.errors import EvofoolError
from evofool.gallery import images as gi
from evofool.gallery.html import Row, render_index
from evofool.gallery.manifest import build_manifest, made_from, read_manifest, write_manifest
from evofool.gallery.rundata import Champion, RunData, load_run, select
from evofool.models.outputs import LOG_PROB, SCORE
from evofool.runfolder import CHAMPIONS_DIR, champion_filename

GALLERY_DIR = "gallery"
IMAGES_DIR = "images"
INDEX = "index.html"
PROGRESS_PLOT = "progress.png"
HISTOGRAM_PLOTS = {LOG_PROB: "confidences.png", SCORE: "activations.png"}
WORKERS = min(4, os.cpu_count() or 1)
# The names an export writes and may later delete; anything else in a gallery folder is
# never deleted, whatever a manifest lists.
OWN_FILES = re.compile(r"images/\d{4,}-[a-z0-9-]+(?:-x\d+)?\.png|contact-sheet-\d{2,}\.png|"
                       + "|".join(re.escape(name) for name in (PROGRESS_PLOT, *HISTOGRAM_PLOTS.values())))
# How long an export waits for another one writing the same gallery (a live refresh of a
# 1,000-class run takes seconds).
LOCK_WAIT = 60.0


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
        shown: What ``classes`` counts: ``classes`` (units of a unit run are its classes),
            or ``images`` (a perturb folder's gallery).
    """

    out: Path
    classes: int
    shown: str = "classes"
    images: int = 0
    reused: int = 0
    sheets: list[str] = field(default_factory=list)
    sheets_rendered: int = 0
    plots: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(frozen=True)
class GalleryFolder:
    """Where a gallery goes.

    Attributes:
        path: The gallery folder.
        root: The folder below which nothing may be a link: the run folder for a gallery
            inside it (so a planted ``gallery`` link is refused), else ``path`` itself (which
            may be a link the user chose).
        in_run_folder: Whether ``path`` is inside the run folder.
    """

    path: Path
    root: Path
    in_run_folder: bool

    def write(self, rel: str, data: bytes) -> None:
        # Not fsynced: a gallery can always be exported again.
        safefs.write_bytes_atomic(self.path / rel, data, root=self.root, durable=False)

    def write_png(self, rel: str, image: Image.Image) -> None:
        """A picture the gallery made (an enlargement, a sheet): quick to encode, not fsynced."""
        safefs.save_png_atomic(self.path / rel, image, compress_level=1, root=self.root)

    def has(self, rel: str) -> bool:
        """Whether ``rel`` is a regular file of the gallery (a link or a FIFO is not)."""
        try:
            return safefs.check_regular(self.path / rel, self.root) is not None
        except (EvofoolError, OSError):
            return False

    def remove(self, rel: str) -> None:
        safefs.remove_file(self.path / rel, self.root)


def _dicts(value) -> list[dict]:
    """The dict items of a manifest list (a damaged or forged manifest may hold anything)."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _same_place(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _gallery_folder(run: RunData, out: str | Path | None) -> GalleryFolder:
    """The gallery folder an export writes (default ``RUN/gallery``), refusing the run's own folders."""
    # "others/x/.." is "others" once x is made: checked (and written) where it lands.
    path = safefs.landing(out) if out is not None else run.folder.path / GALLERY_DIR
    if _same_place(path, run.folder.path):
        raise EvofoolError(f"cannot export into the run folder {run.folder.path} itself; leave out --out "
                           f"(it exports to {run.folder.path / GALLERY_DIR}) or choose another folder")
    in_run = _same_place(path.parent, run.folder.path)
    if in_run:
        path = run.folder.path / path.name  # the same folder, reached without a link to the run folder
    if in_run and path.name == CHAMPIONS_DIR:
        raise EvofoolError(f"cannot export into {path}: it holds the run's champions")
    return GalleryFolder(path=path, root=run.folder.path if in_run else path, in_run_folder=in_run)


def _previous_manifest(gallery: GalleryFolder, run: RunData, force: bool) -> dict | None:
    """The manifest of the gallery already there, if this run wrote it.

    Raises:
        EvofoolError: the folder is not empty and not a gallery of this run (unless ``force``),
            or it is a file, or a link inside the run folder.
    """
    path = gallery.path
    if not os.path.lexists(path):
        return None
    if gallery.in_run_folder and path.is_symlink():
        safefs.make_dir(path, gallery.root)  # raises the one-line refusal naming the link
    if not path.is_dir():
        raise EvofoolError(f"{path} exists and is not a folder")
    previous = read_manifest(path, strict=False)
    if made_from(previous, run, path, gallery.in_run_folder):
        return previous
    if force or not any(path.iterdir()):
        return None  # force: overwrite what has our names, delete nothing
    raise EvofoolError(f"{path} is not empty and is not a gallery of {run.folder.path}; export into a new or "
                       f"empty folder, or pass --force to write into it anyway (it deletes nothing it did "
                       f"not write)")


def _stamp(champion: Champion) -> str:
    """Identifies a champion's content: a new champion always has a higher fitness.

    (Not the file's mtime: a resumed run may write a champion's PNG again.)
    """
    return f"{champion.generation}:{champion.fitness!r}:{len(champion.png)}"


def _write_class(ch: Champion, name: str, stamp: str, gallery: GalleryFolder, scale: int | None,
                 enlarge: bool) -> tuple[dict, Image.Image]:
    """Copies one champion PNG (and writes its enlargement); its manifest entry and image."""
    data, image = ch.png, gi.decode_png(ch.png, ch.source)  # the bytes champions.json describes
    s = scale if scale is not None else gi.default_scale(image.height, image.width)
    gi.check_scale(s, image.height, image.width)
    gallery.write(f"{IMAGES_DIR}/{name}", data)  # the archived file, byte for byte
    enlarged = None
    if s > 1 and enlarge:
        enlarged = f"{IMAGES_DIR}/{gi.enlarged_name(name, s)}"
        gallery.write_png(enlarged, gi.enlarge(image, s))
    entry = {"class": ch.index, "name": ch.name, **ch.values(),
             "generation": ch.generation, "image": f"{IMAGES_DIR}/{name}", "enlarged": enlarged, "scale": s,
             "width": image.width, "height": image.height,
             "source": ch.file, "source_stamp": stamp}
    return entry, image


def _reusable(old: dict | None, name: str, stamp: str, gallery: GalleryFolder, scale: int | None,
              enlarge: bool) -> bool:
    """Whether the previous export's files for a class still show the same champion."""
    if not (old and old.get("source_stamp") == stamp and old.get("image") == f"{IMAGES_DIR}/{name}"):
        return False
    enlarged = old.get("enlarged")
    if not all(isinstance(old.get(k), int) for k in ("width", "height")):
        return False
    if enlarged is not None and (not isinstance(old.get("scale"), int)
                                 or enlarged != f"{IMAGES_DIR}/{gi.enlarged_name(name, old['scale'])}"):
        return False
    return ((scale is None or old.get("scale") == scale)
            and (not enlarge or enlarged is not None or old.get("scale") == 1)
            and all(gallery.has(f) for f in (old["image"], enlarged) if f))


def _export_images(run: RunData, chosen: list[Champion], gallery: GalleryFolder, scale: int | None,
                   enlarge: bool, previous: dict[int, dict], pool: ThreadPoolExecutor,
                   result: ExportResult) -> tuple[list[dict], dict[int, Image.Image]]:
    """Writes native (and enlarged) PNGs, reusing unchanged ones from ``previous``.

    Returns:
        One manifest entry per class, and the images it opened (class → image).
    """
    safefs.make_dir(gallery.path / IMAGES_DIR, gallery.root)
    entries: list[dict | None] = []
    jobs = {}
    for i, ch in enumerate(chosen):
        name = champion_filename(ch.index, ch.name, run.name_width)
        stamp = _stamp(ch)
        old = previous.get(ch.index)
        if _reusable(old, name, stamp, gallery, scale, enlarge):
            entries.append({**old, "class": ch.index, "name": ch.name, **ch.values(),
                            "generation": ch.generation, "source": ch.file})
            result.reused += 1
        else:
            entries.append(None)
            jobs[i] = pool.submit(_write_class, ch, name, stamp, gallery, scale, enlarge)
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


def _export_sheets(run: RunData, chosen: list[Champion], entries: list[dict], gallery: GalleryFolder, what: str,
                   previous: dict | None, loaded: dict[int, Image.Image], pool: ThreadPoolExecutor,
                   result: ExportResult) -> list[dict]:
    """Writes the contact-sheet pages whose content changed; returns their manifest entries."""
    old_keys = {s.get("file"): s.get("key") for s in _dicts(previous.get("contact_sheets"))} if previous else {}
    pages = gi.paginate(len(chosen))
    sheets, jobs = [], []
    for number, span in enumerate(pages, 1):
        page = [chosen[i] for i in span]
        titles = _sheet_titles(run, number, len(pages), what)
        key = hashlib.sha256(json.dumps([*titles] + [entries[i]["source_stamp"] for i in span]).encode()).hexdigest()[:16]
        name = gi.sheet_name(number)
        if old_keys.get(name) != key or not gallery.has(name):
            jobs.append(pool.submit(_write_sheet, page, loaded, titles, gallery, name))
        sheets.append({"file": name, "classes": [c.index for c in page], "key": key})
    for job in jobs:
        job.result()
    result.sheets_rendered = len(jobs)
    return sheets


def _write_sheet(page: list[Champion], loaded: dict[int, Image.Image], titles: tuple[str, str],
                 gallery: GalleryFolder, name: str) -> None:
    """Renders and saves one contact-sheet page."""
    tiles = [gi.tile_image(loaded.get(c.index) or gi.decode_png(c.png, c.source)) for c in page]
    gallery.write_png(name, gi.render_sheet(page, tiles, *titles))


def _export_plots(run: RunData, gallery: GalleryFolder) -> list[str]:
    from evofool.gallery.plots import histogram_plot, progress_plot

    written = []
    progress = progress_plot(run.log, run.num_classes, run.fitness_kind)
    if progress is not None:
        gallery.write(PROGRESS_PLOT, progress)
        written.append(PROGRESS_PLOT)
    histogram = HISTOGRAM_PLOTS[run.fitness_kind]
    gallery.write(histogram, histogram_plot(run.champions, run.num_classes, run.fitness_kind))
    written.append(histogram)
    return written


def _remove_stale(gallery: GalleryFolder, previous: dict | None, keep: set[str]) -> None:
    """Deletes files this run's previous export listed that this one no longer has: regular
    files with the export's own names (``OWN_FILES``) only, whatever else the manifest says."""
    if not previous:
        return
    listed = [f for e in _dicts(previous.get("classes")) for f in (e.get("image"), e.get("enlarged"))]
    listed += [s.get("file") for s in _dicts(previous.get("contact_sheets"))]
    listed += previous["plots"] if isinstance(previous.get("plots"), list) else []
    for rel in {f for f in listed if isinstance(f, str) and OWN_FILES.fullmatch(f)} - keep:
        gallery.remove(rel)


def _by_class(manifest: dict | None) -> dict[int, dict]:
    """A previous manifest's class entries by class index."""
    return {e["class"]: e for e in _dicts(manifest["classes"]) if isinstance(e.get("class"), int)} if manifest else {}


def _first_image_size(chosen: list[Champion]) -> tuple[int, int]:
    """(height, width) of the first chosen champion (all of a run's champions share the model's size)."""
    image = gi.decode_png(chosen[0].png, chosen[0].source)
    return image.height, image.width


def export_run_gallery(run_dir: str | Path, out: str | Path | None = None, *, top: int | None = None,
                       classes: str | list | None = None, scale: int | None = None,
                       live: bool = False, force: bool = False) -> ExportResult:
    """Writes a run's gallery.

    Args:
        run_dir: The run folder.
        out: The gallery folder (default ``RUN/gallery``): new, empty, or a gallery of this run.
        top: Only the ``top`` best classes (highest confidence, or activation; best first).
        classes: Only these classes (``"3,5,seven"`` or a list), in this order.
        scale: Enlargement factor (default: so that the long side is ≥ 224 px; 1: none; the
            enlarged long side may be at most ``images.MAX_ENLARGED_SIDE``).
        live: The refresh at a checkpoint of a running job: keep the images and sheet pages
            of unchanged champions, and until the run has finished write only the page,
            native PNGs, manifests and plots (no enlargements, no contact sheets).
        force: Write into ``out`` even if it is not empty and not a gallery of this run
            (files with the gallery's names are overwritten; nothing is deleted).

    Raises:
        EvofoolError: not a run folder, missing or damaged files, a bad selection or scale, an
            ``out`` that holds other files, links, another export running there, or a failed
            write (disk full...: the run folder is untouched).
    """
    start = time.perf_counter()
    if scale is not None and scale < 1:
        raise EvofoolError(f"--scale must be at least 1 (got {scale})")
    run = load_run(run_dir)
    if run.log_damaged:
        print(f"warning: {run.folder.log_path}: skipped {len(run.log_damaged)} damaged line(s) "
              f"(first: line {run.log_damaged[0]}); the plots leave them out", file=sys.stderr)
    chosen = select(run, classes, top)
    if scale is not None:
        gi.check_scale(scale, *_first_image_size(chosen))
    gallery = _gallery_folder(run, out)
    previous = _previous_manifest(gallery, run, force)  # refuses before anything is written
    try:
        result = _export(run, chosen, gallery, previous, top=top, classes=classes, scale=scale, live=live)
    except OSError as exc:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        raise EvofoolError(f"could not write the gallery {gallery.path}: {exc.strerror or exc}{where}; the run "
                           f"folder is untouched (free space, then export again)") from None
    result.seconds = time.perf_counter() - start
    return result


def _export(run: RunData, chosen: list[Champion], gallery: GalleryFolder, previous: dict | None, *,
            top: int | None, classes, scale: int | None, live: bool) -> ExportResult:
    """The writing half of ``export_run_gallery``, under the gallery's lock."""
    full = not live or run.finished
    value = "confidence" if run.is_probability else "activation"
    what = (f"top {len(chosen)} by {value}" if top is not None
            else f"chosen {run.cells}" if classes is not None else f"all {len(chosen)} {run.cells}")
    # The page opens in the export's order where it chose one (rows are written in it).
    ordered = (f"best first (top {len(chosen)})" if top is not None
               else "as chosen (--classes)" if classes is not None else None)
    export = {"top": top, "classes": [c.index for c in chosen] if classes is not None else None,
              "scale": scale, "live": live, "complete": full, "folder": None}
    if gallery.in_run_folder:
        safefs.make_dir(gallery.path, gallery.root)
    else:
        gallery.path.mkdir(parents=True, exist_ok=True)
    export["folder"] = str(gallery.path.resolve())
    if previous is None:
        # A manifest first, naming the run: a folder this export leaves half-written (a full
        # disk, a damaged PNG) is still recognised as this run's gallery next time.
        write_manifest(gallery.path, build_manifest(run, [], [], [], {**export, "complete": False}), gallery.root)
    with safefs.lock_folder(gallery.path, "gallery", wait=LOCK_WAIT):
        if previous is not None:  # another export may have finished while this one waited
            latest = read_manifest(gallery.path, strict=False)
            previous = latest if made_from(latest, run, gallery.path, gallery.in_run_folder) else None
        old = previous if live else None
        result = ExportResult(out=gallery.path, classes=len(chosen))
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:  # PNG coding and file I/O release the GIL
            entries, loaded = _export_images(run, chosen, gallery, scale, full,
                                             _by_class(old), pool, result)
            sheets = _export_sheets(run, chosen, entries, gallery, what, old, loaded, pool, result) if full else []
        result.sheets = [s["file"] for s in sheets]
        result.plots = _export_plots(run, gallery)

        write_manifest(gallery.path, build_manifest(run, entries, sheets, result.plots, export), gallery.root)
        rows = [Row(index=ch.index, name=ch.name, fitness=ch.fitness, confidence=ch.confidence,
                    generation=ch.generation, image=e["image"], enlarged=e["enlarged"], width=e["width"],
                    height=e["height"]) for ch, e in zip(chosen, entries)]
        page = render_index(run, rows, result.plots, result.sheets, live, ordered)
        gallery.write(INDEX, page.encode("utf-8"))

        keep = {f for e in entries for f in (e["image"], e["enlarged"]) if f} | set(result.sheets) | set(result.plots)
        _remove_stale(gallery, previous, keep)
    return result
