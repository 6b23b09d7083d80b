"""Transfer of fooling images to other models (the paper's DNN_A → DNN_B test).

A run's champion PNGs (8-bit, exactly what its own model scored) are scored by
other models, one batched forward pass per model. For each class: the run's own
confidence (from ``champions.json``), each other model's confidence for that same
class, and the other model's own top-1 class and confidence. The summary counts the
images each other model gives ≥ 50 % and ≥ 99 % for the run's class.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from evofool import safefs
from evofool.errors import EvofoolError
from evofool.models.outputs import SCORE
from evofool.runfolder import RunFolder, champions_fitness_kind, write_json_atomic

# summary key suffix -> confidence level for the run's class
LEVELS = {"50": 0.5, "99": 0.99}


# The report CSV's first columns (what tells a report transfer wrote from another file).
CSV_COLUMNS = ("class", "name", "file", "own confidence")


@dataclass
class Scored:
    """One image under one other model."""

    confidence: float  # for the run's class
    top1: int
    top1_name: str
    top1_confidence: float


@dataclass
class TransferRow:
    """One champion: its class, file, own confidence and its scores under each other model."""

    index: int
    name: str
    file: str
    own_confidence: float
    others: dict[str, Scored] = field(default_factory=dict)


@dataclass
class TransferReport:
    """Everything ``evofool transfer`` prints and writes."""

    run: str
    run_model: str
    models: list[str]
    rows: list[TransferRow]

    def summary(self) -> dict[str, dict[str, float]]:
        """Per other model: fraction (and count) of images ≥ 50 % / ≥ 99 % for the run's class."""
        out = {}
        n = max(len(self.rows), 1)
        for spec in self.models:
            entry: dict[str, float] = {"images": len(self.rows)}
            for key, level in LEVELS.items():
                count = sum(r.others[spec].confidence >= level for r in self.rows)
                entry[f"n{key}"], entry[f"frac{key}"] = count, count / n
            entry["same_top1"] = sum(r.others[spec].top1 == r.index for r in self.rows) / n
            out[spec] = entry
        own = {"images": len(self.rows)}
        for key, level in LEVELS.items():
            count = sum(r.own_confidence >= level for r in self.rows)
            own[f"n{key}"], own[f"frac{key}"] = count, count / n
        return {"own": own, **out}

    def to_json(self) -> dict:
        return {"run": self.run, "run_model": self.run_model, "models": self.models,
                "rows": [asdict(r) for r in self.rows], "summary": self.summary()}

    def to_csv(self) -> str:
        """One row per champion; per other model: confidence, top-1 class and its confidence."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        header = list(CSV_COLUMNS)
        for spec in self.models:
            header += [f"{spec} confidence", f"{spec} top1", f"{spec} top1 confidence"]
        writer.writerow(header)
        for r in self.rows:
            line = [r.index, r.name, r.file, f"{r.own_confidence:.9g}"]
            for spec in self.models:
                s = r.others[spec]
                line += [f"{s.confidence:.9g}", s.top1_name, f"{s.top1_confidence:.9g}"]
            writer.writerow(line)
        return buf.getvalue()


def transfer_runtime(run_runtime: str) -> str:
    """The runtime the other models score with: torch where the run scored with torch (a
    choice, a CUDA run or a run from before runtimes), else ``auto``: ONNX Runtime where an
    export of that model agrees with torch (another model may not export; that is no error)."""
    return "torch" if run_runtime == "torch" else "auto"


def score_champions(run: str | Path, specs: list[str], device: torch.device | str | None = None,
                    runtime: str | None = None) -> TransferReport:
    """Scores a run's champion images with each model in ``specs``.

    Args:
        run: A run folder with ``champions.json``.
        specs: Model specs of the other models (their class names must equal the run's).
        device: Where to run the models (``None``: CUDA if available).
        runtime: What scores them (``None``: ``transfer_runtime`` of the run's runtime).

    Raises:
        EvofoolError: not a run folder, no champions, a unit run's champions (activations,
            not class confidences), an unknown model, other class names, a model that returns
            raw scores, an image of another size.
    """
    from evofool.devices import default_device
    from evofool.imageio import load_image
    from evofool.scoring import build_scoring, load_classifier

    if not specs:
        raise EvofoolError("give at least one --model to transfer the images to")
    if len(set(specs)) != len(specs):
        raise EvofoolError("a --model is listed twice")
    folder = RunFolder.open(run)
    config = folder.config()
    names = folder.class_names()
    doc, files = folder.read_champion_files()  # as one checkpoint wrote them, even mid-run
    if champions_fitness_kind(doc) == SCORE:
        raise EvofoolError(f"{folder.path} is a unit run ({config.model}): its champions maximise raw "
                           f"activations, not a class's confidence, so there is nothing to transfer")
    champions = doc.get("champions", [])
    if not champions:
        raise EvofoolError(f"{folder.path} has no champions yet")
    rows = [TransferRow(int(c["class"]), str(c["name"]), str(c["file"]), float(c["confidence"]))
            for c in champions]
    report = TransferReport(str(folder.path), config.model, list(specs), rows)
    runtime = transfer_runtime(config.runtime) if runtime is None else runtime
    clf_device = torch.device(device) if device is not None else default_device()
    for spec in specs:
        clf = load_classifier(spec, clf_device)
        if clf.outputs == "scores":
            raise EvofoolError(f"{spec} returns raw unit scores, not class probabilities")
        if list(clf.class_names) != list(names):
            raise EvofoolError(f"{spec} has other classes than the run ({len(clf.class_names)} classes: "
                               f"{_brief(clf.class_names)}; the run's {config.model}: {_brief(names)})")
        batch = torch.stack([load_image(folder.path / r.file, clf.input_shape, resize=clf.resize_inputs,
                                        model=spec, data=files.get(r.file)) for r in rows])
        # After the checks, so that a refused model is never exported.
        _, evaluator = build_scoring(clf, device=clf_device, runtime=runtime, probe=False)
        probs = evaluator.evaluate(batch).probs.cpu()  # one pass per model
        own = probs[torch.arange(len(rows)), torch.tensor([r.index for r in rows])]
        top_conf, top = probs.max(dim=1)
        for r, c, t, tc in zip(rows, own.tolist(), top.tolist(), top_conf.tolist()):
            r.others[spec] = Scored(c, t, clf.class_names[t], tc)
    return report


def _brief(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (", ..." if len(names) > limit else "")


def report_paths(run: str | Path, out: str | Path | None) -> list[Path]:
    """Where the report goes: ``transfer.json`` and ``transfer.csv`` in the run folder, or ``out``.

    Raises:
        EvofoolError: ``out`` ends neither in ``.json`` nor ``.csv``.
    """
    if out is None:
        folder = Path(run)
        return [folder / "transfer.json", folder / "transfer.csv"]
    out = Path(out)
    if out.suffix.lower() not in (".json", ".csv"):
        raise EvofoolError(f"--out must end in .json or .csv (got {out.name})")
    return [out]


def check_report_targets(paths: list[Path]) -> None:
    """Raises ``EvofoolError`` unless every path may be written: a regular file or none, holding
    no one else's data, in a folder that is not a run folder in use. The CLI checks before
    scoring, so a refusal costs no forward pass; ``write_report`` checks again."""
    _check_files(paths)
    for folder in {path.parent for path in paths}:
        lock = _lock_if_run_folder(folder)
        if lock is not None:
            lock.release()


def write_report(report: TransferReport, out: str | Path | None) -> list[Path]:
    """Writes ``transfer.json`` and ``transfer.csv`` into the run folder, or one file ``out``,
    holding the run folder's lock while it writes there (never beside a running run).

    Raises:
        EvofoolError: ``out`` ends neither in ``.json`` nor ``.csv``; a target that is a link,
            another program's file or a run's own file; a run folder in use.
    """
    paths = report_paths(report.run, out)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    _check_files(paths)  # every target checked before either is written
    locks = [_lock_if_run_folder(folder) for folder in {path.parent for path in paths}]
    try:
        for path in paths:
            if path.suffix.lower() == ".json":
                write_json_atomic(path, report.to_json())
            else:
                safefs.write_text_atomic(path, report.to_csv())  # a new file renamed in place: never through a link
    finally:
        for lock in locks:
            if lock is not None:
                lock.release()
    return paths


REPORT_KEYS = {"run", "run_model", "models", "rows", "summary"}  # TransferReport.to_json's


def _check_files(paths: list[Path]) -> None:
    """Each path is absent or a regular file holding a report transfer wrote."""
    for path in paths:
        safefs.check_regular(path)
        if not _replaceable(path):
            raise EvofoolError(f"{path} exists and is not a transfer report; transfer replaces only its own "
                               f"reports: give --out a new file")


def _replaceable(path: Path) -> bool:
    """Whether ``path`` is absent or a report transfer wrote (a run's own files never are)."""
    try:
        data = safefs.read_bounded(path, safefs.JSON_LIMIT)
    except FileNotFoundError:
        return True
    except (OSError, EvofoolError):  # too large to be a report, or unreadable
        return False
    if path.suffix.lower() == ".csv":
        return data.startswith(",".join(CSV_COLUMNS).encode())
    try:
        doc = json.loads(data)
    except ValueError:
        return False
    return isinstance(doc, dict) and set(doc) == REPORT_KEYS


def _lock_if_run_folder(folder: Path):
    """The lock of ``folder`` when it is a run folder (one writer at a time: not while its run
    goes on), else None."""
    if not safefs.is_lock_file(folder / safefs.LOCK):
        return None
    try:
        return safefs.lock_folder(folder)
    except EvofoolError as exc:
        raise EvofoolError(f"{exc}; or write the report elsewhere with --out FILE.json") from None


def pct(p: float) -> str:
    """A confidence as a percentage with 4 decimals (tells 99.99 % from 99.9999 %)."""
    return f"{p:.4%}"


def format_table(report: TransferReport) -> list[str]:
    """The printed table: one line per class, then one summary line per other model."""
    head = ["class", "own model"]
    for spec in report.models:
        head += [spec, "top-1 (confidence)"]
    body = []
    for r in report.rows:
        line = [r.name, pct(r.own_confidence)]
        for spec in report.models:
            s = r.others[spec]
            line += [pct(s.confidence), f"{s.top1_name} ({pct(s.top1_confidence)})"]
        body.append(line)
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    lines = [f"run {report.run}: {len(report.rows)} champions; own model {report.run_model}"]
    lines += ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in [head, *body]]
    summary = report.summary()
    n = len(report.rows)
    own = summary["own"]
    lines.append(f"own model: {own['n50']}/{n} ≥ 50 %, {own['n99']}/{n} ≥ 99 %")
    for spec in report.models:
        s = summary[spec]
        lines.append(f"{spec}: {s['n50']}/{n} ({s['frac50']:.0%}) ≥ 50 %, {s['n99']}/{n} ({s['frac99']:.0%}) "
                     f"≥ 99 % for the run's class; top-1 is the run's class for {s['same_top1']:.0%}")
    return lines


__all__ = ["TransferReport", "TransferRow", "Scored", "format_table", "score_champions", "transfer_runtime",
           "report_paths", "check_report_targets", "write_report"]
