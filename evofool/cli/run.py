"""``evofool run`` and ``evofool resume``.

Options only parse; every value is checked once, by ``RunConfig`` (and the encoding's
``PARAMS`` table for ``--param``), whether it came from here, a run.toml or a run folder.
"""

from __future__ import annotations

import json

import click

from evofool.config import REFINE_OPTION_KEYS, RunConfig, load_toml
from evofool.encodings import ENCODINGS, describe_params, encoding_class
from evofool.errors import EvofoolError

# CLI option name -> RunConfig field, for options that map one to one.
_FIELDS = {"model": "model", "encoding": "encoding", "population": "population",
           "generations": "generations", "seed": "seed", "device": "device", "max_batch": "max_batch", "precision": "precision",
           "runtime": "runtime", "threads": "threads",
           "checkpoint_every": "checkpoint_every", "stop_at": "stop_at", "crops": "crops",
           "ray": "ray", "workers": "workers", "selection": "selection", "focus_below": "focus_below",
           "recombine": "recombine", "extrapolate": "extrapolate", "weight_steps": "weight_steps", "refine": "refine",
           "refine_share": "refine_share", "refine_steps": "refine_steps", "refine_lr": "refine_lr",
           "refine_adapt": "refine_adapt", "refine_balance": "refine_balance"}

# Defaults and choice lists come from RunConfig's declarations, never restated here.
_DEFAULTS = RunConfig()
_PARAMS = RunConfig.params()
_CHOICES = {name: param.choices for name, param in _PARAMS.items()}

RUNTIME_HELP = ("What scores the images: auto = ONNX Runtime on the CPU (exported once per model, "
                "checked against torch), torch on CUDA; a run keeps the runtime it started with.")
THREADS_HELP = ("Torch and ONNX Runtime threads (0: all CPUs this process may use, or OMP_NUM_THREADS). "
                "Several runs on one machine: --threads 1 each.")


def _param_help() -> str:
    """``--param`` help: each encoding's parameter names, from its PARAMS table."""
    listed = "; ".join(f"{name}: " + ", ".join(encoding_class(name).PARAMS) for name in ENCODINGS)
    return (f"Encoding parameter, e.g. --param eta=20 (repeatable): {listed} "
            "(defaults and valid values below).")


def _encodings_epilog() -> str:
    """One paragraph per encoding: each parameter's default, valid values and meaning."""
    # \b keeps click from rewrapping the lines of a paragraph.
    return "\n\n".join(f"\b\nEncoding parameters of {name} (--param NAME=VALUE):\n"
                        + "\n".join(f"  {line}" for line in lines)
                        for name, lines in describe_params().items())


def parse_param(spec: str) -> tuple[str, object]:
    """``eta=20`` → ``("eta", 20)``; values are parsed as JSON where possible."""
    if "=" not in spec:
        raise EvofoolError(f"--param takes NAME=VALUE (got {spec!r})")
    name, value = spec.split("=", 1)
    try:
        return name.strip().replace("-", "_"), json.loads(value)
    except ValueError:
        return name.strip().replace("-", "_"), value


def _given(ctx: click.Context) -> dict:
    """Config values the user typed (not defaults), so resume can tell what was asked for."""
    out = {}
    for opt, key in _FIELDS.items():
        if ctx.get_parameter_source(opt) not in (None, click.core.ParameterSource.DEFAULT):
            out[key] = ctx.params[opt]
    if ctx.params.get("params"):
        out["encoding_params"] = dict(parse_param(p) for p in ctx.params["params"])
    return out


def _hooks(no_gallery: bool) -> list:
    if no_gallery:
        return []
    try:
        from evofool.gallery import refresh_live
    except ImportError:
        return []
    return [refresh_live]


@click.command("run", epilog=_encodings_epilog())
@click.option("--model", default=_DEFAULTS.model, show_default=True, help="Model spec (see 'evofool models').")
@click.option("--encoding", type=click.Choice(sorted(ENCODINGS)), default=_DEFAULTS.encoding, show_default=True,
              help="How a genome becomes an image.")
@click.option("--generations", type=int, default=_DEFAULTS.generations, show_default=True,
              help="Generations in total.")
@click.option("--population", type=int, default=_DEFAULTS.population, show_default=True,
              help=f"Offspring per generation: {_PARAMS['population'].describe()}, and bounded by memory.")
@click.option("--seed", type=int, default=_DEFAULTS.seed, show_default=True,
              help=f"Seed of the run's one random generator: {_PARAMS['seed'].describe()}.")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help=_param_help())
@click.option("--out", type=click.Path(), default=None, help="Run folder [default: runs/<model>-<encoding>-seed<S>].")
@click.option("--config", "config_file", type=click.Path(), default=None, help="A run.toml with the run settings (model, population, ...; [encoding_params] for --param); not --out, --quiet, --no-gallery.")
@click.option("--resume", "resume_dir", type=click.Path(), default=None, help="Continue the run in this folder.")
@click.option("--device", default=None, help="cpu, cuda, cuda:N [default: cuda if available].")
@click.option("--max-batch", type=int, default=_DEFAULTS.max_batch, show_default=True,
              help="Largest forward-pass chunk. Below the model's own chunk (100 small images, 50 photos, "
                   "200 on a GPU) the network sees another batch shape, so scores may differ in their last "
                   "bits from a run at the default; a run keeps its chunk when resumed.")
@click.option("--precision", type=click.Choice(_CHOICES["precision"]), default=_DEFAULTS.precision,
              show_default=True, help="Forward pass: bfloat16 autocast on CUDA with auto, float32 on CPU.")
@click.option("--runtime", type=click.Choice(_CHOICES["runtime"]), default=_DEFAULTS.runtime, show_default=True,
              help=RUNTIME_HELP)
@click.option("--threads", type=int, default=_DEFAULTS.threads, show_default=True, help=THREADS_HELP)
@click.option("--checkpoint-every", type=int, default=_DEFAULTS.checkpoint_every, show_default=True,
              help="Generations between checkpoints.")
@click.option("--stop-at", type=float, default=_DEFAULTS.stop_at, help="Stop once every class reaches this confidence.")
@click.option("--crops", type=int, default=_DEFAULTS.crops, show_default=True, help="1, or 10 for 10-crop scoring.")
@click.option("--selection", type=click.Choice(_CHOICES["selection"]), default=_DEFAULTS.selection,
              show_default=True,
              help="Parent choice: 3/4 from classes still below --focus-below, 1/4 from all (lagging; curiosity: "
                   "of those, by how often a champion's children lately entered the archive); or uniform (the paper).")
@click.option("--focus-below", type=float, default=_DEFAULTS.focus_below, show_default=True,
              help="Confidence under which a class counts as lagging.")
@click.option("--recombine", default=_DEFAULTS.recombine, show_default=True, metavar="auto|off|2,4,8,16",
              help="Step recombination: candidates along each class's averaged best mutation steps "
                   "(direct encoding; auto = on with lengths 2,4,8,16 where the genomes are vectors).")
@click.option("--extrapolate", default=_DEFAULTS.extrapolate, show_default=True, metavar="off|on|0.5,1,2",
              help="For each class a child that changed only its parent's CPPN weights took, candidates "
                   "going on along its step by these multiples of it (cppn; black-box; on = 0.5,1,2).")
@click.option("--weight-steps", type=float, default=_DEFAULTS.weight_steps, show_default=True,
              help="Share of each generation given to per-class Gaussian steps on a champion's CPPN weights, "
                   "step sizes adapted by the 1/5 success rule (cppn; 0: off).")
@click.option("--refine", type=click.Choice(_CHOICES["refine"]), default=_DEFAULTS.refine, show_default=True,
              help="grad: NOT black-box; a share of each generation is champions whose weights (CPPN links, "
                   "or pixels) took gradient steps up their class through the torch model (each "
                   "forward+backward counts as 3 evaluations; torch-loadable class models).")
@click.option("--refine-share", type=float, default=_DEFAULTS.refine_share, show_default=True,
              help="Share of each generation --refine grad takes.")
@click.option("--refine-steps", type=int, default=_DEFAULTS.refine_steps, show_default=True,
              help="Gradient steps per refined child.")
@click.option("--refine-lr", type=float, default=_DEFAULTS.refine_lr, show_default=True,
              help="Adam's learning rate for --refine grad [default: the encoding's: "
                   + ", ".join(f"{name} {encoding_class(name).default_refine_lr({}):g}" for name in ENCODINGS
                               if hasattr(encoding_class(name), "default_refine_lr"))
                   + " (cppn with --param refine_links=all: "
                   + f"{encoding_class('cppn').default_refine_lr({'refine_links': 'all'}):g}"
                   + ": evolved champions are rugged in their inner link weights; pixels live in [0, 1])].")
@click.option("--refine-adapt", type=click.Choice(_CHOICES["refine_adapt"]), default=_DEFAULTS.refine_adapt,
              show_default=True,
              help="on: each class keeps its own --refine grad step, adapted by the 1/5 success rule "
                   "between a tenth of --refine-lr and --refine-lr (champions near the top need finer steps).")
@click.option("--refine-balance", type=click.Choice(_CHOICES["refine_balance"]), default=_DEFAULTS.refine_balance,
              show_default=True,
              help="on: --refine-share is only where the share starts; each generation it moves towards "
                   "refined children or the rest of the batch, whichever gains the archive more per evaluation.")
@click.option("--ray", default=None, metavar="auto|local|ADDRESS|off",
              help="Evaluate on Ray workers (pip install 'evofool[ray]'): attach/start locally, a private "
                   "local instance, a cluster address, or off.")
@click.option("--workers", type=int, default=_DEFAULTS.workers, show_default=True,
              help="Ray workers (0: one per GPU, else 2).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--no-gallery", is_flag=True, help="Do not refresh the run's gallery at checkpoints.")
@click.pass_context
def run(ctx: click.Context, model, encoding, generations, population, seed, params, out, config_file,
        resume_dir, device, max_batch, precision, runtime, threads, checkpoint_every, stop_at, crops, selection, focus_below, recombine,
        extrapolate, weight_steps, refine, refine_share, refine_steps, refine_lr, refine_adapt, refine_balance, ray,
        workers, quiet, no_gallery) -> None:
    """Evolve fooling images: one champion per class, saved in a run folder."""
    from evofool.job import Job

    given = _given(ctx)
    if resume_dir is not None:
        job = Job.resume(resume_dir, overrides=given, progress=not quiet, hooks=_hooks(no_gallery))
    else:
        # Defaults < run.toml < options typed on the command line.
        values = RunConfig().to_dict()
        toml = load_toml(config_file) if config_file else {}
        values.update(toml)
        encoding_params = {**values.get("encoding_params", {}), **given.pop("encoding_params", {})}
        values.update(given)
        values["encoding_params"] = encoding_params
        config = RunConfig.from_dict(values)  # checks every value, whatever its source
        # Every setting typed or in run.toml that computes nothing without --refine grad:
        # the --refine-* options, and the encoding's refine-only parameters (cppn's refine_links).
        ignored = ["--" + key.replace("_", "-") for key in REFINE_OPTION_KEYS if key in given or key in toml]
        ignored += [f"--param {name}" for name in encoding_class(config.encoding).REFINE_ONLY_PARAMS
                    if name in encoding_params]
        if config.refine != "grad" and ignored:
            click.echo("note: ignored without --refine grad: " + ", ".join(ignored), err=True)
        # Encoding parameters that another one switches off (crossover_sigma with crossover_rate 0).
        inert: dict[str, list[str]] = {}
        switched_off = encoding_class(config.encoding).inert_params(encoding_params, config.encoding_params)
        for name, why in switched_off.items():
            inert.setdefault(why, []).append(f"--param {name}")
        if inert:
            click.echo("note: ignored " + "; ".join(f"with {why}: " + ", ".join(names)
                                                     for why, names in inert.items()), err=True)
        if config.refine == "grad" and config.encoding == "direct" and "mutation" not in encoding_params:
            click.echo(REFINE_DIRECT_NOTE, err=True)
        job = Job.start(config, out, progress=not quiet, hooks=_hooks(no_gallery))
        click.echo(f"run folder: {job.folder.path}", err=True)
    ctx.exit(_finish(job))


# Measured on EfficientNet-Lite0 (--refine-share 0.6, seed 0, Intel Xeon): the hybrid's median at
# 14.9-15k evaluations, 87.45 % from polynomial steps on noise, 52.57 % from the default patterns.
REFINE_DIRECT_NOTE = ("note: --refine grad on the direct encoding climbed faster with the paper's mutation from noise "
                      "(add --param mutation=polynomial --param init=noise; see README)")


def _finish(job) -> int:
    code = job.run()
    if code == 0:
        click.echo(job.result_line())
    return code


@click.command("resume")
@click.argument("run_dir", type=click.Path())
@click.option("--generations", type=int, default=None, help="New total (extends a finished run).")
@click.option("--device", default=None,
              help="cpu, cuda, cuda:N: where to continue [default: as the run was started, else cuda if available].")
@click.option("--ray", default=None, metavar="auto|local|ADDRESS|off", help="Evaluate on Ray workers, or off.")
@click.option("--workers", type=int, default=None, help="Ray workers.")
@click.option("--runtime", type=click.Choice(_CHOICES["runtime"]), default=None,
              help="Score with another runtime than the run started with (its scores then differ in the "
                   "last bits) [default: the run's].")
@click.option("--threads", type=int, default=None, help=THREADS_HELP)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--no-gallery", is_flag=True, help="Do not refresh the run's gallery at checkpoints.")
@click.pass_context
def resume(ctx: click.Context, run_dir, generations, device, ray, workers, runtime, threads, quiet,
           no_gallery) -> None:
    """Continue an interrupted or finished run from its last checkpoint."""
    from evofool.job import Job

    overrides = {k: v for k, v in (("generations", generations), ("device", device), ("ray", ray),
                                   ("workers", workers), ("runtime", runtime), ("threads", threads))
                 if v is not None}
    job = Job.resume(run_dir, overrides=overrides, progress=not quiet, hooks=_hooks(no_gallery))
    ctx.exit(_finish(job))


COMMANDS = [run, resume]
