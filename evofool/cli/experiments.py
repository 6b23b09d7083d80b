"""``evofool ascent`` and ``evofool perturb``: the papers' gradient-based experiments."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from evofool.devices import DEVICE_HELP, resolve_device
from evofool.errors import EvofoolError
from evofool.models import DEFAULT_MODEL


@click.command("ascent")
@click.option("--model", "model_spec", default=DEFAULT_MODEL, show_default=True,
              help="Model spec (see 'evofool models').")
@click.option("--classes", default=None, metavar="LIST",
              help="Classes to make images for: indices or names, e.g. 0,3,7 [default: all].")
@click.option("--start", type=click.Choice(["noise", "mean"]), default="noise", show_default=True,
              help="Start from seeded uniform noise, or from the model's mean input (else grey).")
@click.option("--steps", type=int, default=500, show_default=True, help="Most gradient steps.")
@click.option("--target", type=float, default=0.9999, show_default=True,
              help="Stop once every image reaches this confidence (scored as saved, 8-bit).")
@click.option("--l2", type=float, default=1e-4, show_default=True, help="L2 decay weight λ: J = log p - λ/2·‖x‖².")
@click.option("--blur-every", type=int, default=0, show_default=True, help="Blur every K steps (0: never).")
@click.option("--blur-sigma", type=float, default=0.5, show_default=True, help="Std of that blur in pixels.")
@click.option("--max-lr", type=float, default=1000.0, show_default=True,
              help="Largest step size; the step is min(max-lr, progress/‖g‖²).")
@click.option("--progress", type=float, default=1.0, show_default=True,
              help="First-order gain in J each step aims for.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the starting noise.")
@click.option("--out", type=click.Path(), default=None, help="Run folder [default: runs/<model>-ascent-seed<S>].")
@click.option("--log-every", type=int, default=1, show_default=True, help="Steps between log.jsonl records.")
@click.option("--device", default=None, help=DEVICE_HELP)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def ascent(model_spec, classes, start, steps, target, l2, blur_every, blur_sigma, max_lr, progress, seed,
           out, log_every, device, quiet) -> None:
    """Fooling images by gradient ascent: one image per class, all classes in one batch.

    Writes the same run folder as 'evofool run' (config.json with encoding "ascent",
    log.jsonl, champions/, champions.json, summary.json), so 'evofool export' works on it.
    """
    import numpy as np
    from tqdm import tqdm

    from evofool.experiments import parse_classes, require_probabilities
    from evofool.models.onnx import require_gradients
    from evofool.experiments.ascent import AscentSettings, run_ascent
    from evofool.models import load_model

    dev = resolve_device(device)
    classifier = load_model(model_spec, dev)
    require_probabilities(classifier, "ascent")
    require_gradients(classifier, "ascent")
    settings = AscentSettings(classes=parse_classes(classes, classifier.class_names), start=start, steps=steps,
                              target=target, l2=l2, blur_every=blur_every, blur_sigma=blur_sigma,
                              max_lr=max_lr, progress=progress, seed=seed).validate(classifier.num_classes)
    n = len(settings.classes)
    bars: list = []  # drawn at the first step: a model refused by run_ascent's probe leaves no bar

    def show(record: dict) -> None:
        if not bars:
            bars.append(tqdm(total=steps, disable=quiet, file=sys.stderr, unit="step", dynamic_ncols=True))
        bars[0].update(1)
        bars[0].set_postfix_str(f"min {record['min']:.6f} median {record['median']:.6f} "
                                f"≥99.99%: {record['n9999']}/{n}", refresh=False)

    try:
        folder, result = run_ascent(classifier, settings, out, dev, log_every=log_every, on_record=show)
    finally:
        for bar in bars:
            bar.close()
    conf = result.champions.confidences()
    reached = int((conf >= target).sum())
    click.echo(f"{reached}/{n} images ≥ {target:.4%} after {result.steps} steps ({result.seconds:.1f} s), "
               f"min {conf.min():.6f}, median {float(np.median(conf)):.6f}; run folder: {folder.path}")
    if reached < n:
        below = [classifier.class_names[k] for k, c in zip(settings.classes, conf) if c < target]
        click.echo(f"below target: {', '.join(below)} (try more --steps, a smaller --l2 or a larger --max-lr)")


@click.command("perturb")
@click.argument("image", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--mnist-test", "mnist_n", type=int, default=None, metavar="N",
              help="Instead of IMAGE: the first N MNIST test images (target: (label+1) mod 10).")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="MNIST idx folder [default: $EVOFOOL_MNIST_DIR, else ../shared/data/mnist].")
@click.option("--model", "model_spec", default=DEFAULT_MODEL, show_default=True,
              help="Model spec (see 'evofool models').")
@click.option("--target", default=None, help="Target class (index or name); required with IMAGE.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output folder [default: runs/perturb-<model>].")
@click.option("--search-steps", type=int, default=10, show_default=True,
              help="Batched L-BFGS solves in the line search over c.")
@click.option("--max-iter", type=int, default=50, show_default=True, help="L-BFGS iterations per solve round.")
@click.option("--device", default=None, help=DEVICE_HELP)
def perturb(image, mnist_n, data_dir, model_spec, target, out, search_steps, max_iter, device) -> None:
    """Szegedy et al.'s minimal adversarial perturbations (box-constrained L-BFGS).

    Writes NNNN-original.png, NNNN-perturbed.png, NNNN-difference.png (mid-grey = no
    change, rescaled to be visible) and perturb.json; reports the distortion
    √(Σr²/n) with pixels in [0, 1].
    """
    import torch

    from evofool.experiments import parse_classes, require_probabilities
    from evofool.models.onnx import require_gradients
    from evofool.experiments.perturb import (PerturbSettings, default_out, find_mnist, minimal_perturbations,
                                             prepare_out, write_outputs)
    from evofool.models import load_model

    if (image is None) == (mnist_n is None):
        raise EvofoolError("give either IMAGE or --mnist-test N")
    if image is not None and target is None:
        raise EvofoolError("--target is required with IMAGE")
    if mnist_n is not None and mnist_n < 1:
        raise EvofoolError(f"--mnist-test needs at least 1 image (got {mnist_n})")
    settings = PerturbSettings(search_steps=search_steps, max_iter=max_iter).validate()
    dev = resolve_device(device)
    classifier = load_model(model_spec, dev)
    require_probabilities(classifier, "perturb")
    require_gradients(classifier, "perturb")  # before prepare_out makes a folder
    names = classifier.class_names

    def one_class(text: str) -> int:
        if "," in text:
            raise EvofoolError(f"--target takes one class (got {text!r})")
        return parse_classes(text, names)[0]

    if image is not None:
        from evofool.imageio import load_image

        images = load_image(image, classifier.input_shape, resize=classifier.resize_inputs,
                            model=model_spec)[None]
        targets, labels, sources = [one_class(target)], [None], [str(image)]
    else:
        from evofool.data import load_idx_dataset

        if tuple(classifier.input_shape) != (1, 28, 28):
            raise EvofoolError(f"--mnist-test needs a 1×28×28 model; {model_spec} takes "
                               f"{tuple(classifier.input_shape)}")
        fixed = one_class(target) if target is not None else None  # checked before any file is read
        test_x, test_y = load_idx_dataset(find_mnist(data_dir), "test")
        if mnist_n > len(test_x):
            raise EvofoolError(f"--mnist-test {mnist_n}: the test set has only {len(test_x)} images")
        images = torch.as_tensor(test_x[:mnist_n]).view(mnist_n, 1, 28, 28)
        labels = [int(v) for v in test_y[:mnist_n]]
        targets = [fixed if fixed is not None else (y + 1) % classifier.num_classes for y in labels]
        sources = [f"mnist-test[{i}]" for i in range(mnist_n)]
    folder = prepare_out(out if out is not None else default_out(model_spec))
    result = minimal_perturbations(classifier, images, torch.tensor(targets), settings, dev)
    report = write_outputs(folder, classifier, result, sources, labels, settings)
    if image is not None:
        entry = report["results"][0]
        click.echo(f"{image}: {entry['predicted']} → {entry['perturbed_predicted']} "
                   f"(target {entry['target']}, {entry['target_confidence']:.2%}), "
                   f"distortion {entry['distortion']:.4f}" + ("" if entry["success"] else " — target NOT reached"))
    n, s = report["images"], report["successes"]
    mean = "n/a" if report["mean_distortion"] is None else f"{report['mean_distortion']:.4f}"
    click.echo(f"success rate {s}/{n} ({report['success_rate']:.1%}), mean distortion {mean} "
               f"(√(Σr²/n), successful images), {report['seconds']:.1f} s; every successful perturbed PNG "
               f"classified as its target: {'yes' if report['all_successes_verified'] else 'NO'}; "
               f"output: {folder} (evofool export {folder} makes its gallery)")


COMMANDS = [ascent, perturb]
