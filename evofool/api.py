"""The Python API: ``evolve`` a model's fooling images, ``resume`` a run, ``load_run`` a run folder.

The same code path as ``evofool run``: a config, a ``Job`` in a run folder, its
checkpoints. ``evolve(out=None)`` runs in a temporary folder that lives as long as the
result; with ``out=`` the folder is an ordinary run folder that ``evofool resume`` and
``evofool export`` accept. An in-memory ``nn.Module`` with ``out=`` is saved into the
folder as TorchScript (``model.pt`` + its sidecar) and the run is scored by that saved
copy from the first generation, so a resume gets exactly the bits the run got.

    import evofool
    result = evofool.evolve(model, input_shape=(1, 28, 28), class_names=[...],
                            encoding="cppn", generations=200, population=200, seed=0)
    result.confidences, result.images, result.class_names
    result.save_gallery("gallery/")
    run = evofool.load_run("runs/NAME")
    evofool.resume("runs/NAME", generations=400)   # on from its last checkpoint
"""

from __future__ import annotations

import json
import numbers
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from evofool.config import RunConfig
from evofool.errors import EvofoolError
from evofool.models.base import Classifier, identity

# Where an in-memory model is saved in a run folder (so `evofool resume` can load it).
MODEL_FILE = "model.pt"


@dataclass
class RunResult:
    """A run's champions, read from its folder.

    Attributes:
        folder: The run folder (a temporary one for ``evolve(out=None)``, kept while this
            object lives).
        class_names: One name per cell.
        confidences: ``(K,)`` float64 champion confidence (probability) per class, 0 for an
            empty cell; for ``unit:`` models the mean activation (``fitness == "activation"``).
        images: ``(K, C, H, W)`` uint8 champion images exactly as saved (zeros: empty cell).
        found_at: ``(K,)`` generation each champion was found (-1: empty cell).
        generation: Generations done.
        evaluations: Images scored.
        fitness: ``"probability"`` or ``"activation"``.
        summary: The run's ``summary.json``.
    """

    folder: Path
    class_names: list[str]
    confidences: np.ndarray
    images: np.ndarray
    found_at: np.ndarray
    generation: int
    evaluations: int
    fitness: str
    summary: dict = field(repr=False)
    _tmp: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    def save_gallery(self, out: str | Path, **options) -> Path:
        """Writes the gallery (PNGs, contact sheets, index.html, manifests, plots) to ``out``.

        ``options`` are ``evofool export``'s (``top=``, ``classes=``, ``scale=``).

        Returns:
            The gallery's ``index.html``.
        """
        from evofool.gallery import export_gallery

        return export_gallery(self.folder, out, **options).out / "index.html"


def load_run(path: str | Path) -> RunResult:
    """The result of the run in ``path`` (a finished or a running one, as far as it got)."""
    from evofool.imageio import load_image
    from evofool.models.outputs import SCORE
    from evofool.runfolder import CONFIDENCE, RunFolder, champion_fitness, champions_fitness_kind

    folder = RunFolder.open(path)
    doc = folder.read_config_doc()
    names = list(doc["class_names"])
    champions_doc, files = folder.read_champion_files()  # as one checkpoint wrote them, even mid-run
    champions = champions_doc["champions"]
    kind = champions_fitness_kind(champions_doc)  # what champions.json says its values are
    fitness = "activation" if kind == SCORE else "probability"
    confidences = np.zeros(len(names), dtype=np.float64)
    found_at = np.full(len(names), -1, dtype=np.int64)
    images = None
    for entry in champions:
        k = int(entry["class"])
        if entry["file"] not in files:
            raise EvofoolError(f"{folder.path / entry['file']} is missing (listed in its champions.json)")
        image = _read_champion(load_image, folder.path / entry["file"], files[entry["file"]])
        if images is None:
            images = np.zeros((len(names), *image.shape), dtype=np.uint8)
        images[k] = image
        confidences[k] = champion_fitness(entry, kind) if kind == SCORE else float(entry[CONFIDENCE])
        found_at[k] = int(entry["generation"])
    summary = _read_summary(folder)
    return RunResult(folder=folder.path, class_names=names, confidences=confidences,
                     images=images if images is not None else np.zeros((len(names), 0, 0, 0), np.uint8),
                     found_at=found_at, generation=int(summary.get("generation", 0)),
                     evaluations=int(summary.get("evaluations", 0)), fitness=fitness, summary=summary)


def _read_champion(load_image, png: Path, data: bytes) -> np.ndarray:
    """A champion PNG (its bytes ``data``, read from ``png``) as ``C×H×W`` uint8 (greyscale or
    RGB, as it was saved)."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        channels = 1 if img.mode == "L" else 3
        shape = (channels, img.height, img.width)
    return load_image(png, shape, data=data).numpy()


def _read_summary(folder) -> dict:
    """``summary.json`` (empty before the first checkpoint)."""
    from evofool.runfolder import SUMMARY

    try:
        return folder.read_json(SUMMARY)
    except FileNotFoundError:
        return {}
    except ValueError:
        raise EvofoolError(f"{folder.path / SUMMARY} is damaged") from None


def evolve(model: str | nn.Module, *, input_shape: Sequence[int] | None = None,
           class_names: Sequence[str] | None = None,
           preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
           outputs: str = "logits", encoding: str = "direct", generations: int = 200,
           population: int = 200, seed: int = 0, out: str | Path | None = None,
           progress: bool = True, gallery: bool = False, **options) -> RunResult:
    """Evolves one fooling image per class of ``model``; the CLI's ``evofool run``.

    Args:
        model: A model spec (``"lenet-mnist"``, ``"onnx:PATH"``... see ``evofool models``)
            or an ``nn.Module`` mapping ``N×C×H×W`` float input (after ``preprocess``) to
            ``N×K`` logits (or probabilities with ``outputs="probs"``).
        input_shape: ``(C, H, W)``; required for an ``nn.Module``.
        class_names: One per output; required for an ``nn.Module``.
        preprocess: Maps ``[0, 1]`` pixels to the module's input (default: none).
        outputs: ``"logits"`` or ``"probs"`` (an ``nn.Module``'s outputs).
        encoding, generations, population, seed: As the CLI's options.
        out: A new run folder to write (resumable with ``evofool resume``), or ``None``
            for a temporary one that lives as long as the result.
        progress: A progress bar (``tqdm.auto``: a widget in a notebook).
        gallery: Refresh the folder's gallery at checkpoints, as the CLI does.
        **options: Any other ``RunConfig`` key (``selection``, ``stop_at``,
            ``encoding_params``, ``checkpoint_every``, ``device``...).

    Raises:
        EvofoolError: a bad value, an unknown option, a model that does not fit.
    """
    from evofool.job import Job

    tmp = tempfile.TemporaryDirectory(prefix="evofool-") if out is None else None
    path = Path(tmp.name) / "run" if tmp is not None else Path(out)
    classifier, files = None, {}
    if isinstance(model, nn.Module):
        classifier, files, spec = _module_classifier(model, input_shape, class_names, preprocess, outputs,
                                                     path if tmp is None else None)
    elif isinstance(model, str):
        spec = model
        if input_shape is not None or class_names is not None or preprocess is not None:
            raise EvofoolError("input_shape, class_names and preprocess are for an nn.Module; "
                               f"the spec {model!r} brings its own")
    else:
        raise EvofoolError(f"model must be a spec string or a torch nn.Module, not {type(model).__name__}")
    values = {**RunConfig().to_dict(), "model": spec, "encoding": encoding, "generations": generations,
              "population": population, "seed": seed, **options}
    config = RunConfig.from_dict(values)
    hooks = [] if not gallery else _live_gallery_hooks()
    try:
        job = Job.start(config, path, progress=progress, hooks=hooks, classifier=classifier, files=files)
    except OSError as exc:  # the CLI's one line, as an exception that names the folder
        raise EvofoolError(f"cannot make the run folder {path}: {exc.strerror or exc}") from None
    code = job.run(announce_stop=False)  # the error below says it
    if code != 0:
        if tmp is not None:  # the folder goes with this call: nothing to resume
            raise EvofoolError(f"the run stopped at generation {job.engine.generation} (signal); it ran in a "
                               f"temporary folder, now removed: pass out= for a run that can be resumed")
        raise _stopped(job, path)
    result = load_run(path)
    result._tmp = tmp
    return result


# What evofool.resume may change: the CLI's `evofool resume` options. Whatever else a run
# computes (model, encoding, population, seed...) is the run's own.
RESUME_OPTIONS = ("device", "runtime", "threads", "ray", "workers")


def resume(path: str | Path, *, generations: int | None = None, progress: bool = True, gallery: bool = False,
           **options) -> RunResult:
    """Continues the run in ``path`` from its newest intact checkpoint; the CLI's ``evofool resume``.

    The result is exactly that of the run never stopped (on one machine). A notebook's
    interrupt stops a run at the end of its generation with a checkpoint, and this
    continues it.

    Args:
        path: A run folder (``evolve(out=...)``'s or ``evofool run``'s).
        generations: The new total of generations (default: the run's own); not below the
            generations done.
        progress: A progress bar (``tqdm.auto``).
        gallery: Refresh the folder's gallery at checkpoints, as the CLI does.
        **options: ``device``, ``runtime``, ``threads``, ``ray`` or ``workers`` (as the CLI's
            options; ``runtime`` changes the last bits).

    Raises:
        EvofoolError: not a run folder, one in use, a damaged one, a model that changed, a
            bad value or an option a resume cannot change.
    """
    from evofool.job import Job

    unknown = sorted(set(options) - set(RESUME_OPTIONS))
    if unknown:
        raise EvofoolError(f"resume cannot change {', '.join(unknown)}; it takes generations, "
                           f"{', '.join(RESUME_OPTIONS)} (everything else is the run's own)")
    overrides = {k: v for k, v in {"generations": generations, **options}.items() if v is not None}
    hooks = [] if not gallery else _live_gallery_hooks()
    job = Job.resume(path, overrides=overrides, progress=progress, hooks=hooks)
    if job.run(announce_stop=False) != 0:
        raise _stopped(job, path)
    return load_run(path)


def _stopped(job, path) -> EvofoolError:
    """The error of a run stopped by a signal (a notebook's interrupt): where it stopped, how to go on."""
    return EvofoolError(f"the run stopped at generation {job.engine.generation} (signal), checkpoint saved; "
                        f"continue it with evofool.resume({str(path)!r}) or: evofool resume {path}")


def _live_gallery_hooks() -> list:
    from evofool.gallery import refresh_live

    return [refresh_live]


def _module_classifier(module: nn.Module, input_shape, class_names, preprocess, outputs: str,
                       folder: Path | None) -> tuple[Classifier, dict[str, bytes], str]:
    """A ``Classifier`` for an in-memory module, and the files that make a run folder resumable.

    With a ``folder`` (``out=``), the module (with ``preprocess`` folded in) is traced to
    TorchScript and the run scores that saved copy, loaded as ``evofool resume`` will load it.
    """
    if input_shape is None or class_names is None:
        raise EvofoolError("an nn.Module needs input_shape=(C, H, W) and class_names=[...]")
    if outputs not in ("logits", "probs"):
        raise EvofoolError(f"outputs must be 'logits' or 'probs' (got {outputs!r})")
    from evofool.models.torchscript import read_sidecar

    shape = _int_tuple(input_shape, "input_shape")
    if hasattr(class_names, "tolist"):  # a NumPy array of names
        class_names = class_names.tolist()
    if isinstance(class_names, (str, bytes)) or not isinstance(class_names, Sequence):
        raise EvofoolError(f"class_names must be a list of names, not {type(class_names).__name__}")
    if not all(isinstance(n, (str, int)) and not isinstance(n, bool) for n in class_names):
        raise EvofoolError("class_names must be strings (or integers)")
    sidecar = {"input_shape": list(shape), "class_names": [str(n) for n in class_names], "outputs": outputs}
    # Validates the sidecar values (shape, names) exactly as a file's would be, before anything
    # is traced or allocated at that shape.
    with tempfile.TemporaryDirectory() as tmp:
        side = Path(tmp) / "model.json"
        side.write_text(json.dumps(sidecar))
        try:
            read_sidecar(side)
        except EvofoolError as exc:  # its message names the temporary file
            raise EvofoolError(str(exc).replace(f"{side}: ", "")) from None
    if any(t.is_meta for t in (*module.parameters(), *module.buffers())):
        raise EvofoolError("the module's weights are on the meta device (shapes without data): load them first")
    module = module.eval()
    if folder is None:
        name = type(module).__name__
        return (Classifier(spec=f"module:{name}", module=module, input_shape=shape,
                           class_names=list(sidecar["class_names"]), preprocess=preprocess or identity,
                           outputs=outputs, meta={"module": name}),
                {}, f"module:{name}")
    from evofool.models.torchscript import load_torchscript

    model_bytes = _torchscript_bytes(_Preprocessed(module, preprocess or identity), shape)
    side_bytes = (json.dumps(sidecar, indent=1) + "\n").encode()
    target = folder.resolve() / MODEL_FILE
    spec = f"torchscript:{target}"
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / MODEL_FILE
        staged.write_bytes(model_bytes)
        staged.with_name(MODEL_FILE + ".json").write_bytes(side_bytes)
        classifier = load_torchscript(str(staged), spec)
    return classifier, {MODEL_FILE: model_bytes, MODEL_FILE + ".json": side_bytes}, spec


def _int_tuple(values, what: str) -> tuple[int, ...]:
    """``values`` (a tuple, list, NumPy array or tensor of integers) as a tuple of ints."""
    try:
        items = list(values.tolist() if hasattr(values, "tolist") else values)
    except TypeError:
        raise EvofoolError(f"{what} must be a sequence of integers like (3, 224, 224), "
                           f"not {type(values).__name__}") from None
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in items):
        raise EvofoolError(f"{what} must be integers like (3, 224, 224) (got {items!r})")
    return tuple(int(v) for v in items)


class _Preprocessed(nn.Module):
    """``module(preprocess(x))`` as one module, so the saved copy needs no Python."""

    def __init__(self, module: nn.Module, preprocess) -> None:
        super().__init__()
        self.module = module
        self.preprocess = preprocess if isinstance(preprocess, nn.Module) else None
        self._fn = None if isinstance(preprocess, nn.Module) else preprocess

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(x) if self.preprocess is not None else self._fn(x)
        return self.module(x)


def _torchscript_bytes(module: nn.Module, input_shape: tuple[int, ...]) -> bytes:
    """The TorchScript archive of ``module``, traced on two random images."""
    import io
    import warnings

    example = torch.rand(2, *input_shape, generator=torch.Generator().manual_seed(0))
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # torch deprecates TorchScript; tracer warnings
            traced = torch.jit.trace(module, example, check_trace=False)
            buf = io.BytesIO()
            torch.jit.save(traced, buf)
    except Exception as exc:  # the tracer raises many types; all mean "cannot save this"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise EvofoolError(f"cannot save this model for a resumable run folder ({first}); "
                           f"use out=None, or pass a torchscript: or onnx: spec") from None
    return buf.getvalue()


__all__ = ["RunResult", "evolve", "load_run"]
