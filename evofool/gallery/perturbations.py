"""The gallery of an ``evofool perturb`` folder: each image, its perturbed copy and their difference.

``evofool export PERTURB_FOLDER`` writes ``PERTURB_FOLDER/gallery`` (or ``--out``)::

    images/0000-original.png ...   the folder's three PNGs per image, byte for byte
    manifest.json                  the images, their predictions and distortions, the source folder
    index.html                     one self-contained page (the run gallery's style)

As for run galleries, it writes into a new or empty folder or a gallery of the same
perturb folder (``force``: any folder), never through a link, one exporter at a time.
"""

from __future__ import annotations

import os
import re
import time
from html import escape
from pathlib import Path

from evofool import safefs
from evofool.errors import EvofoolError
from evofool.experiments.perturb import REPORT
from evofool.gallery.build import GALLERY_DIR, ExportResult
from evofool.gallery.html import CSS, THUMB

FORMAT = "evofool-perturb-gallery/1"
IMAGES_DIR = "images"
KINDS = ("original", "perturbed", "difference")
# perturb writes NNNN-original.png, NNNN-perturbed.png and NNNN-difference.png only.
FILE_NAME = re.compile(r"\d{4,}-(?:original|perturbed|difference)\.png")
LOCK_WAIT = 60.0


def is_perturb_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder ``evofool perturb`` wrote (a regular ``perturb.json``, no run)."""
    path = Path(path)
    try:
        return (path.is_dir() and not os.path.lexists(path / "config.json")
                and safefs.check_regular(path / REPORT) is not None)
    except (EvofoolError, OSError):
        return False


def _read_report(folder: Path) -> tuple[dict, list[dict]]:
    """``perturb.json`` and its results, each naming its three PNGs (checked: names perturb writes).

    Raises:
        EvofoolError: a damaged report.
    """
    where = folder / REPORT
    try:
        report = safefs.read_json(where, safefs.JSON_LIMIT, root=folder)
        results = report["results"]
        for entry in results:
            if not all(FILE_NAME.fullmatch(str(entry["files"][kind])) for kind in KINDS):
                raise ValueError
    except (OSError, ValueError, KeyError, TypeError):
        raise EvofoolError(f"{where} is damaged") from None
    return report, results


def _refuse_foreign(out: Path, folder: Path, force: bool) -> None:
    """Refuses an ``out`` that holds files and is not a gallery of this perturb folder (unless ``force``)."""
    if not os.path.lexists(out) or force:
        return
    if not out.is_dir():
        raise EvofoolError(f"{out} exists and is not a folder")
    if not any(out.iterdir()):
        return
    try:
        manifest = safefs.read_json(out / "manifest.json", safefs.JSON_LIMIT, root=out)
        ours = manifest.get("format") == FORMAT and manifest.get("source") == str(folder.resolve())
    except (OSError, ValueError, AttributeError, EvofoolError):
        ours = False
    if not ours:
        raise EvofoolError(f"{out} is not empty and is not a gallery of {folder}; export into a new or empty "
                           f"folder, or pass --force to write into it anyway")


def _thumb(rel: str, alt: str) -> str:
    return (f'<a href="{escape(rel)}"><img class="px" src="{escape(rel)}" width="{THUMB}" height="{THUMB}" '
            f'alt="{escape(alt)}"></a>')


def _row(entry: dict) -> str:
    files = entry["files"]
    cells = "".join(f'<td class="img">{_thumb(IMAGES_DIR + "/" + files[k], k)}</td>' for k in KINDS)
    outcome = "reached" if entry.get("success") else "not reached"
    return (f'<tr><td class="idx">{escape(str(entry.get("index")))}</td>'
            f'<td>{escape(str(entry.get("source")))}</td>{cells}'
            f'<td class="name">{escape(str(entry.get("predicted")))} → '
            f'{escape(str(entry.get("perturbed_predicted")))}</td>'
            f'<td>{escape(str(entry.get("target")))} ({outcome})</td>'
            f'<td class="conf">{100 * float(entry.get("target_confidence") or 0):.2f} %</td>'
            f'<td class="conf">{float(entry.get("distortion") or 0):.4f}</td></tr>')


def render_page(report: dict, results: list[dict], folder: Path) -> str:
    """The page's HTML: one row per image (original, perturbed, difference, predictions)."""
    mean = report.get("mean_distortion")
    chips = "".join(f'<span class="chip">{escape(label)} <b>{escape(str(value))}</b></span>' for label, value in [
        ("model", report.get("model")), ("images", report.get("images")),
        ("successes", f"{report.get('successes')} / {report.get('images')}"),
        ("mean distortion", "n/a" if mean is None else f"{mean:.4f}"),
        ("re-checked as saved", "yes" if report.get("all_successes_verified") else "no")])
    rows = "\n".join(_row(entry) for entry in results)
    title = escape(folder.resolve().name)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>evofool perturbations · {title}</title>
<style>{CSS}</style></head>
<body>
<header><h1>Minimal perturbations <small>{title} · {escape(str(report.get("method", "")))}</small></h1>
<div class="chips">{chips}</div></header>
<main>
<p class="links">Distortion: √(Σr²/n) with pixels in [0, 1]; the difference image is mid-grey where nothing
changed, scaled so the largest change is visible. Manifest: <a href="manifest.json">JSON</a></p>
<table id="images"><thead><tr><th>#</th><th>source</th><th>original</th><th>perturbed</th><th>difference</th>
<th>predicted → after</th><th>target</th><th>target confidence</th><th>distortion</th></tr></thead>
<tbody>
{rows}
</tbody></table>
</main>
</body></html>
"""


def export_perturbations(folder: str | Path, out: str | Path | None = None, *, force: bool = False) -> ExportResult:
    """Writes the gallery of a perturb folder; returns an ``ExportResult`` (its rows are images).

    Raises:
        EvofoolError: a damaged ``perturb.json``, a missing PNG, an ``out`` that holds other
            files (unless ``force``), links on the way, or a failed write.
    """
    from evofool import __version__

    start = time.perf_counter()
    folder = Path(folder)
    report, results = _read_report(folder)
    out = Path(out) if out is not None else folder / GALLERY_DIR
    inside = out.parent.resolve() == folder.resolve()
    root = folder if inside else out  # no folder below root may be a link (a planted "gallery" link...)
    _refuse_foreign(out, folder, force)
    if inside:
        safefs.make_dir(out, root)
    else:
        out.mkdir(parents=True, exist_ok=True)
    result = ExportResult(out=out, classes=len(results), shown="images")
    with safefs.lock_folder(out, "gallery", wait=LOCK_WAIT):
        safefs.make_dir(out / IMAGES_DIR, root)
        for entry in results:
            for kind in KINDS:
                name = entry["files"][kind]
                try:
                    data = safefs.read_bounded(folder / name, safefs.PNG_LIMIT, folder)
                except FileNotFoundError:
                    raise EvofoolError(f"{folder / name} is missing (listed in {folder / REPORT})") from None
                safefs.write_bytes_atomic(out / IMAGES_DIR / name, data, root=root, durable=False)
                result.images += 1
        manifest = {"format": FORMAT, "evofool_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "source": str(folder.resolve()), "folder": str(out.resolve()), "model": report.get("model"),
                    "images": [{**entry, "files": {k: f"{IMAGES_DIR}/{entry['files'][k]}" for k in KINDS}}
                               for entry in results]}
        safefs.write_json_atomic(out / "manifest.json", manifest, root=root, durable=False)
        safefs.write_text_atomic(out / "index.html", render_page(report, results, folder), root=root, durable=False)
    result.seconds = time.perf_counter() - start
    return result


__all__ = ["export_perturbations", "is_perturb_folder", "render_page"]
