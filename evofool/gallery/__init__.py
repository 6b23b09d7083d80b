"""Fooling-image galleries: ``evofool export`` and the live gallery refreshed during runs.

``export_gallery`` writes ``RUN/gallery`` (or any folder); ``refresh_live`` is the run's
checkpoint hook (cheap, never raises); ``verify`` re-scores an exported gallery.
"""

from __future__ import annotations

import sys
from pathlib import Path

from evofool.gallery.build import GALLERY_DIR, ExportResult, export_gallery
from evofool.gallery.verify import Mismatch, VerifyReport, verify
from evofool.runfolder import RunFolder


def refresh_live(folder: RunFolder) -> None:
    """Re-writes ``folder/gallery`` after a checkpoint, reusing unchanged images and pages.

    While the run goes on only the page, native PNGs, manifests and plots are written;
    the checkpoint that finishes the run adds enlargements and contact sheets.

    Never raises (except ``KeyboardInterrupt``): a failing gallery must not stop a run,
    so errors are reported as one warning line on stderr.
    """
    try:
        export_gallery(folder.path, Path(folder.path) / GALLERY_DIR, live=True)
    except Exception as exc:  # noqa: BLE001 - the run matters more than its gallery
        print(f"warning: gallery refresh failed: {exc.__class__.__name__}: {exc}", file=sys.stderr)


__all__ = ["ExportResult", "Mismatch", "VerifyReport", "export_gallery", "refresh_live", "verify"]
