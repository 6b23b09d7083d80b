"""``manifest.json`` and ``manifest.csv``: what a gallery holds, and which run it came from."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

from evofool import safefs
from evofool.errors import EvofoolError
from evofool.gallery.rundata import RunData
from evofool.models.outputs import LOG_PROB, SCORE

MANIFEST_JSON = "manifest.json"
MANIFEST_CSV = "manifest.csv"
FORMAT = "evofool-gallery/1"
# What a class entry reports: a probability run's confidence and log-probability, or a unit
# run's activation (manifests written before unit runs had their own key hold no fitness_kind).
VALUE_FIELDS = {LOG_PROB: ["confidence", "log_prob"], SCORE: ["activation"]}
RUN_FIELDS = ["model", "encoding", "seed", "population", "generations_done"]


def csv_fields(fitness_kind: str) -> list[str]:
    """The columns of ``manifest.csv``: class, name, its values, files, then the run's facts."""
    return ["class", "name", *VALUE_FIELDS[fitness_kind], "generation", "image", "enlarged", *RUN_FIELDS]


def fitness_kind_of(manifest: dict) -> str:
    """``log_prob`` or ``score``: what a manifest's class values are."""
    kind = manifest["run"].get("fitness_kind")
    return kind if kind in VALUE_FIELDS else LOG_PROB


def run_summary(run: RunData) -> dict:
    """The run facts a gallery records: model, encoding, seed, population, generations done..."""
    cfg = run.config
    evaluations = next((r.get("evaluations") for r in reversed(run.log) if "evaluations" in r),
                       run.summary.get("evaluations"))
    return {"folder": str(run.folder.path.resolve()), "model": cfg.get("model"), "encoding": cfg.get("encoding"),
            "encoding_params": cfg.get("encoding_params", {}), "seed": cfg.get("seed"),
            "population": cfg.get("population"), "generations": cfg.get("generations"),
            "generations_done": run.generations_done, "evaluations": evaluations,
            "crops": cfg.get("crops", 1), "runtime": cfg.get("runtime"), "precision": cfg.get("precision"),
            "num_classes": run.num_classes, "fitness_kind": run.fitness_kind,
            "config_hash": run.config_hash, "evofool_version": run.version}


def build_manifest(run: RunData, classes: list[dict], sheets: list[dict], plots: list[str],
                   export: dict) -> dict:
    """The manifest document.

    Args:
        run: The run.
        classes: One entry per exported class (class, name, its values, generation, image,
            enlarged, scale, width, height, source, source_stamp).
        sheets: Contact-sheet pages: ``{"file", "classes", "key"}``.
        plots: Plot file names.
        export: The export's options (top, classes, scale, live, complete) and the gallery's
            absolute ``folder`` (see ``made_from``).
    """
    from evofool import __version__

    return {"format": FORMAT, "evofool_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "run": run_summary(run), "export": export,
            "classes": classes, "contact_sheets": sheets, "plots": plots}


def write_manifest(out: Path, manifest: dict, root: Path | None = None) -> None:
    """Writes ``manifest.json`` and ``manifest.csv`` (one row per class, run facts repeated).

    ``root``: the folder below which nothing may be a link (see ``safefs.write_bytes_atomic``).
    """
    run, kind = manifest["run"], fitness_kind_of(manifest)
    fields = csv_fields(kind)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for entry in manifest["classes"]:
        writer.writerow({**{k: run.get(k) for k in RUN_FIELDS if k in run},
                         **{k: entry.get(k) for k in fields if k in entry},
                         **{k: repr(entry[k]) for k in VALUE_FIELDS[kind]},  # every digit, as archived
                         "enlarged": entry.get("enlarged") or ""})
    # The gallery can be exported again: no fsync (see safefs.write_bytes_atomic).
    safefs.write_json_atomic(out / MANIFEST_JSON, manifest, root=root or out, durable=False)
    safefs.write_text_atomic(out / MANIFEST_CSV, buf.getvalue(), root=root or out, durable=False)


def read_manifest(out: Path, strict: bool = True) -> dict | None:
    """A gallery's ``manifest.json`` (bounded, never through a link).

    Args:
        out: The gallery folder.
        strict: Raise for a missing or damaged manifest; otherwise return ``None``.

    Raises:
        EvofoolError: (strict only) no manifest, or a damaged one.
    """
    path = out / MANIFEST_JSON
    try:
        doc = safefs.read_json(path, safefs.JSON_LIMIT, root=out)
        if (doc.get("format") != FORMAT or not isinstance(doc.get("classes"), list)
                or not isinstance(doc.get("run"), dict)):
            raise ValueError
        return doc
    except FileNotFoundError:
        if strict:
            raise EvofoolError(f"{out} is not an evofool gallery (no {MANIFEST_JSON})") from None
    except EvofoolError:
        if strict:
            raise
    except (OSError, ValueError, AttributeError):
        if strict:
            raise EvofoolError(f"{path} is damaged") from None
    return None


def made_from(manifest: dict | None, run: RunData, gallery: Path, in_run_folder: bool) -> bool:
    """Whether ``manifest`` (read from the folder ``gallery``) says this run wrote this gallery.

    It must name the run's config hash and, for a gallery outside the run folder, the run's
    folder and this gallery folder (so a manifest copied or forged into another folder does not
    make the files there the export's own). A gallery inside the run folder keeps belonging to
    the run when the run folder is moved or copied.
    """
    if not manifest:
        return False
    recorded, export = manifest["run"], manifest.get("export")
    if recorded.get("config_hash") != run.config_hash:
        return False
    return in_run_folder or (recorded.get("folder") == str(run.folder.path.resolve())
                             and isinstance(export, dict) and export.get("folder") == str(gallery.resolve()))
