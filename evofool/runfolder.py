"""The run folder: config, per-generation log, champions, checkpoints, gallery.

Layout of ``runs/NAME/``::

    config.json                   resolved RunConfig + its hash + evofool version + class names
    log.jsonl                     one JSON record per generation
    champions/NNNN-name.png       each class's champion image, native resolution
    champions.json                per class: name, confidence, log-prob, generation found, file
    summary.json                  where the run stands: generations, when targets were reached
    checkpoint.safetensors        latest checkpoint (+ checkpoint.prev.safetensors)
    gallery/                      written by ``evofool export`` (refreshed during runs)
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
from PIL import Image

from evofool import __version__
from evofool.config import RunConfig
from evofool.errors import EvofoolError

CONFIG = "config.json"
LOG = "log.jsonl"
CHAMPIONS_DIR = "champions"
CHAMPIONS = "champions.json"
SUMMARY = "summary.json"


def slug(name: str, limit: int = 40) -> str:
    """A filesystem-safe version of a class or model name (``"great white shark"`` → ``great-white-shark``)."""
    s = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()
    return s[:limit].rstrip("-") or "class"


def champion_filename(index: int, name: str, width: int = 4) -> str:
    """``0003-three.png``: class index first so files sort in class order."""
    return f"{index:0{width}d}-{slug(name)}.png"


def to_pil(image: np.ndarray) -> Image.Image:
    """A C×H×W uint8 array (C = 1 or 3) as a PIL image."""
    if image.shape[0] == 1:
        return Image.fromarray(image[0], mode="L")
    return Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0)), mode="RGB")


def write_json_atomic(path: Path, data) -> None:
    """Writes JSON via a temp file + rename, so readers never see half a file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=1)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class RunFolder:
    """A run's folder on disk."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # --- creation / opening ------------------------------------------------------------------
    @staticmethod
    def default_path(config: RunConfig, root: str | Path = "runs") -> Path:
        """``runs/<model>-<encoding>-seed<S>``, with ``-2``, ``-3``... when that is taken."""
        base = Path(root) / f"{slug(config.model)}-{config.encoding}-seed{config.seed}"
        path, n = base, 1
        while path.exists() and any(path.iterdir()):
            n += 1
            path = base.with_name(f"{base.name}-{n}")
        return path

    @classmethod
    def create(cls, path: str | Path, config: RunConfig, class_names: list[str],
               extra: dict | None = None) -> "RunFolder":
        """Makes a new run folder; refuses one that already holds anything.

        ``extra`` adds entries to ``config.json`` (e.g. the encoding's resolved parameters).

        Raises:
            EvofoolError: when ``path`` is a file, holds a run, or is not empty.
        """
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise EvofoolError(f"{path} exists and is not a folder")
        if path.is_dir() and any(path.iterdir()):
            if (path / CONFIG).exists():
                raise EvofoolError(f"{path} already holds a run; continue it with "
                                   f"'evofool resume {path}' or choose another --out")
            raise EvofoolError(f"{path} is not empty; choose another --out")
        path.mkdir(parents=True, exist_ok=True)
        folder = cls(path)
        write_json_atomic(path / CONFIG, {"evofool_version": __version__, "config_hash": config.hash(),
                                          "config": config.to_dict(), "class_names": list(class_names),
                                          **(extra or {})})
        (path / LOG).touch()
        return folder

    @classmethod
    def open(cls, path: str | Path) -> "RunFolder":
        """Opens an existing run folder.

        Raises:
            EvofoolError: when ``path`` is not a run folder.
        """
        path = Path(path)
        if not (path / CONFIG).is_file():
            raise EvofoolError(f"{path} is not an evofool run folder (no {CONFIG})")
        return cls(path)

    def read_config_doc(self) -> dict:
        try:
            doc = json.loads((self.path / CONFIG).read_text())
            RunConfig.from_dict(doc["config"])
            return doc
        except (ValueError, KeyError, TypeError):
            raise EvofoolError(f"{self.path / CONFIG} is damaged or not an evofool config") from None

    def config(self) -> RunConfig:
        return RunConfig.from_dict(self.read_config_doc()["config"])

    def class_names(self) -> list[str]:
        return list(self.read_config_doc()["class_names"])

    # --- log ---------------------------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        return self.path / LOG

    def log_bytes(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def truncate_log(self, size: int) -> None:
        """Cuts the log back to ``size`` bytes (records after a checkpoint are re-run on resume)."""
        actual = self.log_bytes()
        if actual < size:
            raise EvofoolError(f"{self.log_path} is shorter ({actual} bytes) than its checkpoint "
                               f"says ({size} bytes); the log was damaged")
        with open(self.log_path, "r+b") as fh:
            fh.truncate(size)
            fh.flush()
            os.fsync(fh.fileno())

    def read_log(self) -> list[dict]:
        """All records of ``log.jsonl``."""
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]

    # --- champions -----------------------------------------------------------------------------
    def write_champions(self, images: np.ndarray, confidences: np.ndarray, log_probs: np.ndarray,
                        generations: np.ndarray, class_names: list[str]) -> None:
        """Writes each filled class's champion PNG and ``champions.json``."""
        out = self.path / CHAMPIONS_DIR
        out.mkdir(exist_ok=True)
        width = max(4, len(str(len(class_names) - 1)))
        entries = []
        for k, name in enumerate(class_names):
            if not np.isfinite(log_probs[k]):
                continue
            fname = champion_filename(k, name, width)
            old = out / fname
            tmp = out / (fname + ".tmp")
            to_pil(images[k]).save(tmp, format="PNG")
            os.replace(tmp, old)
            entries.append({"class": k, "name": name, "confidence": float(confidences[k]),
                            "log_prob": float(log_probs[k]), "generation": int(generations[k]),
                            "file": f"{CHAMPIONS_DIR}/{fname}"})
        write_json_atomic(self.path / CHAMPIONS, {"num_classes": len(class_names), "champions": entries})

    def read_champions(self) -> dict:
        try:
            return json.loads((self.path / CHAMPIONS).read_text())
        except FileNotFoundError:
            raise EvofoolError(f"{self.path} has no {CHAMPIONS} yet (no generation finished?)") from None
        except ValueError:
            raise EvofoolError(f"{self.path / CHAMPIONS} is damaged") from None

    def write_summary(self, summary: dict) -> None:
        write_json_atomic(self.path / SUMMARY, summary)
