"""``evofool export``: a run's gallery (PNGs, contact sheets, plots, manifests, index.html)."""

from __future__ import annotations

from pathlib import Path

import click

from evofool.errors import EvofoolError


@click.command("export")
@click.argument("run_dir", type=click.Path())
@click.option("--out", type=click.Path(), default=None, help="Gallery folder [default: RUN_DIR/gallery].")
@click.option("--top", type=int, default=None,
              help="Only the K best classes (highest confidence, or a unit run's activation), best first; "
                   "the page opens in that order.")
@click.option("--classes", default=None, metavar="LIST",
              help="Only these classes, in this order: indices or names, e.g. 3,5,7.")
@click.option("--scale", type=int, default=None,
              help="Enlargement of the extra copies [default: long side ≥ 224 px; 1: none; "
                   "too large a factor is refused with the largest allowed].")
@click.option("--force", is_flag=True,
              help="Write into --out even if it holds other files (those with the gallery's names are "
                   "overwritten; nothing is deleted).")
@click.option("--verify", "check", is_flag=True,
              help="Re-score every exported PNG with the run's model; exit 1 if any differs by > 1e-3.")
@click.option("--screenshot", is_flag=True, help="Also write gallery/screenshot.png (needs Chromium).")
def export(run_dir: str, out: str | None, top: int | None, classes: str | None, scale: int | None,
           force: bool, check: bool, screenshot: bool) -> None:
    """Export a run's fooling images as a gallery: PNGs, contact sheets, index.html, manifests, plots.

    --top and --classes choose which classes the images, sheets, page and manifests
    show; the plots always summarise the whole run. --out must be a new or empty folder
    or a gallery of this run (a re-export replaces only files the gallery wrote), unless
    --force. Export reads the run folder only, so it works while the run goes on.

    RUN_DIR may also be a folder written by 'evofool perturb': its gallery shows each
    image, its perturbed copy and their difference.
    """
    from evofool.gallery import export_gallery, is_perturb_folder, verify

    if check and is_perturb_folder(run_dir):
        raise EvofoolError(f"--verify re-scores a run's champions; {run_dir} is a perturb folder, whose "
                           f"perturb.json already records the re-check of its saved PNGs")
    result = export_gallery(run_dir, out, top=top, classes=classes, scale=scale, force=force)
    click.echo(f"gallery: {result.out / 'index.html'} ({result.classes} {result.shown}, {len(result.sheets)} "
               f"contact sheet page{'s' if len(result.sheets) != 1 else ''}, {result.seconds:.1f} s)")
    if screenshot:
        from evofool.gallery.browser import screenshot as take

        click.echo(f"screenshot: {take(result.out / 'index.html', Path(result.out) / 'screenshot.png')}")
    if check:
        report = verify(result.out)
        for mismatch in report.mismatches:
            click.echo(f"mismatch: {mismatch}")
        if not report.ok:
            click.echo(f"verify failed: {len(report.mismatches)} of {report.checked} images differ from the "
                       f"archive by more than 1e-3", err=True)
            click.get_current_context().exit(1)
        click.echo(f"verified {report.checked} images")


COMMANDS = [export]
