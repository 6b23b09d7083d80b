"""``evofool transfer`` and ``evofool retrain``: the papers' studies built on finished runs."""

from __future__ import annotations

from pathlib import Path

import click

from evofool.devices import DEVICE_HELP, resolve_device
from evofool.errors import EvofoolError


@click.command("transfer")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--model", "models", multiple=True, required=True, metavar="SPEC",
              help="Other model to score the champions with (repeatable); same classes as the run.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write FILE.json or FILE.csv [default: transfer.json and transfer.csv in RUN].")
@click.option("--device", default=None, help=DEVICE_HELP)
def transfer(run: Path, models: tuple[str, ...], out: Path | None, device: str | None) -> None:
    """Score a run's champion images with other models (do fooling images transfer?)."""
    from evofool.experiments.transfer import (check_report_targets, format_table, report_paths, score_champions,
                                              write_report)
    from evofool.runfolder import RunFolder

    RunFolder.open(run)  # a folder that is no run is refused before anything else
    paths = report_paths(run, out)
    if out is None or out.parent.is_dir():  # a new --out folder is made only when writing
        check_report_targets(paths)
    report = score_champions(run, list(models), resolve_device(device))
    for line in format_table(report):
        click.echo(line)
    paths = write_report(report, out)
    click.echo(f"wrote {', '.join(str(p) for p in paths)}")


@click.command("retrain")
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path),
              help="MNIST-style idx folder (the real classes' training and test data).")
@click.option("--model", default="lenet-mnist", show_default=True, help="DNN1, the network attacked first.")
@click.option("--iterations", type=int, default=3, show_default=True,
              help="Retrainings K (K + 1 networks attacked: DNN1 .. DNN(K+1)).")
@click.option("--generations", type=int, default=200, show_default=True, help="Generations per run.")
@click.option("--population", type=int, default=200, show_default=True, help="Offspring per generation.")
@click.option("--images-per-iteration", type=int, default=1000, show_default=True,
              help="Fooling images kept from each run (distinct champions, spread evenly over the run).")
@click.option("--min-confidence", type=float, default=0.99, show_default=True,
              help="A champion counts as a fooling image from this confidence on.")
@click.option("--snapshot-every", type=int, default=1, show_default=True,
              help="Generations between champion snapshots (the run's checkpoints).")
@click.option("--epochs", type=int, default=5, show_default=True, help="Training epochs per retrained network.")
@click.option("--train-subset", type=int, default=None, metavar="N",
              help="Train on a seeded random N of the training images (quick checks).")
@click.option("--stop-at", type=float, default=None, help="Stop each run once every class reaches this.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Training seed; run k uses seed + k - 1.")
@click.option("--device", default=None, help="Device of the runs: cpu, cuda, cuda:N [default: auto].")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="New folder for the experiment.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def retrain(data_dir, model, iterations, generations, population, images_per_iteration, min_confidence,
            snapshot_every, epochs, train_subset, stop_at, seed, device, out, quiet) -> None:
    """The paper's retraining study: add fooling images as class n+1, retrain, fool again.

    Writes OUT/iter-k/run (the run against DNNk), OUT/iter-k/fooling.npz and
    OUT/iter-k/model.safetensors (DNN(k+1), usable as lenet:PATH), and the table
    OUT/retrain.json / OUT/retrain.csv.
    """
    from evofool.experiments.retrain import RetrainSettings, run_retrain, table_lines

    settings = RetrainSettings(data=data_dir, model=model, iterations=iterations, generations=generations,
                               population=population, images_per_iteration=images_per_iteration,
                               min_confidence=min_confidence, snapshot_every=snapshot_every, epochs=epochs,
                               seed=seed, train_subset=train_subset, stop_at=stop_at, device=device)
    rows = run_retrain(settings, out, progress=not quiet, say=click.echo)
    real = rows[0].classes
    click.echo("")
    for line in table_lines(rows, real):
        click.echo(line)
    click.echo(f"wrote {out / 'retrain.json'} and {out / 'retrain.csv'}")


COMMANDS = [transfer, retrain]
