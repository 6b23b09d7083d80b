"""Galleries: ``evofool export`` and the live gallery refreshed during runs.

``export_gallery`` writes ``RUN/gallery`` (or any folder) for a run folder, or the page of
an ``evofool perturb`` folder; ``refresh_live`` is the run's checkpoint hook (cheap, never
raises); ``verify`` re-scores an exported run gallery.
"""

from __future__ import annotations

import sys
from pathlib import Path

from evofool.errors import EvofoolError
from evofool.gallery.build import GALLERY_DIR, ExportResult, export_run_gallery
from evofool.gallery.perturbations import export_perturbations, is_perturb_folder
from evofool.gallery.verify import Mismatch, VerifyReport, verify

# export_gallery options that choose or enlarge a run's classes: a perturb folder has none.
_RUN_ONLY = ("top", "classes", "scale")


def export_gallery(run_dir: str | Path, out: str | Path | None = None, **options) -> ExportResult:
    """Writes the gallery of a run folder (``build.export_run_gallery``, whose ``options`` these
    are) or of a perturb folder (``perturbations.export_perturbations``: ``force`` only).

    Raises:
        EvofoolError: as the exporter does, or a run-only option given for a perturb folder.
    """
    if not is_perturb_folder(run_dir):
        return export_run_gallery(run_dir, out, **options)
    given = [f"--{name}" for name in _RUN_ONLY if options.get(name) is not None]
    if given:
        raise EvofoolError(f"{run_dir} is a perturb folder: its gallery shows every image ({', '.join(given)} "
                           f"choose among a run's classes)")
    return export_perturbations(run_dir, out, force=bool(options.get("force")))


def refresh_live(job) -> None:
    """The checkpoint hook of a job: re-writes ``RUN/gallery``, reusing unchanged images and pages.

    While the run goes on only the page, native PNGs, manifests and plots are written;
    the checkpoint that finishes the run adds enlargements and contact sheets.

    Never raises (except ``KeyboardInterrupt``): a failing gallery must not stop a run,
    so errors are reported as one warning line on stderr.
    """
    try:
        path = Path(job.folder.path)
        export_run_gallery(path, path / GALLERY_DIR, live=True)
    except Exception as exc:  # noqa: BLE001 - the run matters more than its gallery
        print(f"warning: gallery refresh failed: {exc.__class__.__name__}: {exc}", file=sys.stderr)


__all__ = ["ExportResult", "Mismatch", "VerifyReport", "export_gallery", "is_perturb_folder", "refresh_live",
           "verify"]
