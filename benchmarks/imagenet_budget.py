"""Sample efficiency on 1,000 classes: variants run to a fixed evaluation budget.

Each variant is an ordinary ``evofool run`` (checkpointed) in its own folder under
``--root``; a folder that already holds part of the budget is resumed to it, so a
measurement that outlives a session continues in the next one, and one long run serves
every smaller budget (its ``log.jsonl`` has a record per generation). The table gives,
at each budget in ``--at``, the median champion confidence and the classes at >= 99 %
and >= 99.99 %; ``--plot`` writes one figure of the curves (median and classes >= 99 %
against evaluations, one line per variant, the paper's settings included).

    python benchmarks/imagenet_budget.py --budget 20000 [--variants paper default curiosity]
        [--crops 1|10] [--seeds 0 1] [--model efficientnet-lite0] [--root runs/budget] [--parallel 2]
        [--at 20000 50000 200000] [--plot budget.png] [--json] [--no-run]

``--no-run`` only reads what the folders hold (e.g. while the runs go on elsewhere).
Runs use ``--threads 1`` each and ``--parallel`` of them at once: on 2 cores, two
single-thread runs score more images per second in total than one run on both.
Ctrl-C or ``kill`` on this script stops its runs at the end of their generation, with a
checkpoint; the same command resumes them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

# The best black-box CPPN setting measured on ImageNet (curiosity-bold): curiosity selection and
# 1.6x the paper's structural mutation rates; the variants built on it add to these flags.
BOLD = ["--selection", "curiosity", "--param", "p_add_node=0.8", "--param", "p_add_link=0.8", "--param",
        "p_remove_node=0.3", "--param", "p_remove_link=0.5"]


def fine80(above: str) -> list[str]:
    """curiosity-bold with 80 % of the children of champions at >= ``above`` confidence changing
    only link weights (the fine80-30 family builds on these flags)."""
    return [*BOLD, "--param", "p_weights_only=0.8", "--param", f"weights_only_above={above}"]


# The direct encoding's mutation and first images before patterns from flat colours became its
# defaults: the direct variants measured before then pin them, so a new folder computes what they did.
NOISE = ["--param", "init=noise"]
POLYNOMIAL = ["--param", "mutation=polynomial", *NOISE]

# name -> (population, extra `evofool run` flags, what it is)
VARIANTS: dict[str, tuple[int, list[str], str]] = {
    "paper": (400, ["--selection", "uniform", "--param", "eta=15"],
              "the paper's settings: population 400, uniform MAP-Elites, polynomial mutation eta 15"),
    "default": (100, [], "evofool's defaults: population 100, lagging selection, eta 40"),
    "curiosity": (100, ["--selection", "curiosity"],
                  "population 100, curiosity selection (parents whose children lately entered the archive)"),
    "curiosity-pop50": (50, ["--selection", "curiosity"], "curiosity selection, population 50"),
    "weight-steps": (100, ["--weight-steps", "0.5"],
                     "population 100, lagging selection; half of each batch per-class (1+1)-ES steps on CPPN weights"),
    "curiosity-weight-steps": (100, ["--selection", "curiosity", "--weight-steps", "0.5"],
                               "curiosity selection, and half of each batch per-class ES steps on CPPN weights"),
    "default-eta15": (100, ["--param", "eta=15"], "evofool's defaults but eta 15"),
    "curiosity-eta15": (100, ["--selection", "curiosity", "--param", "eta=15"],
                        "curiosity selection, population 100, the paper's eta 15"),
    "curiosity-pop400-eta15": (400, ["--selection", "curiosity", "--param", "eta=15"],
                               "the paper's population 400 and eta 15, curiosity selection"),
    "curiosity-eta100": (100, ["--selection", "curiosity", "--param", "eta=100"],
                         "curiosity selection, population 100, eta 100 (smaller weight steps)"),
    "curiosity-gentle": (100, ["--selection", "curiosity", "--param", "p_add_node=0.25", "--param",
                               "p_add_link=0.25", "--param", "p_remove_node=0.1", "--param", "p_remove_link=0.15"],
                         "curiosity selection, eta 40, half the paper's structural mutation rates"),
    "curiosity-bold": (100, BOLD, "curiosity selection, eta 40, 1.6x the paper's structural mutation rates"),
    "curiosity-bold-pop50": (50, BOLD, "curiosity-bold at population 50 (twice the generations per evaluation)"),
    "curiosity-bold-cross": (100, [*BOLD, "--param", "crossover_rate=0.3"],
                             "curiosity-bold, and 30 % of the parents first take half the genes they share "
                             "with another parent of the batch (NEAT's uniform crossover)"),
    "curiosity-bold-line": (100, [*BOLD, "--param", "crossover_rate=0.3", "--param", "crossover=line"],
                            "curiosity-bold, and 30 % of the parents first move their shared weights along the "
                            "line to another parent's (iso+line variation)"),
    "curiosity-bold-light50": (100, [*BOLD, "--param", "p_weights_only=0.5"],
                               "curiosity-bold, but half the children change only link weights (graph and "
                               "activations kept)"),
    "curiosity-bold-light80": (100, [*BOLD, "--param", "p_weights_only=0.8"],
                               "curiosity-bold, but 80 % of the children change only link weights"),
    "curiosity-bold-fine80-30": (100, fine80("0.3"),
                                 "curiosity-bold, but 80 % of the children of champions at >= 30 % confidence "
                                 "change only link weights"),
    "curiosity-bold-fine80-30-sparse": (100, [*fine80("0.3"), "--param", "weights_only_p_weight=0.02",
                                              "--param", "weights_only_eta=100"],
                                        "curiosity-bold-fine80-30, the weights-only children moving 1-2 weights "
                                        "(p 0.02, at least one) by smaller steps (eta 100)"),
    "curiosity-bold-fine80-10-sparse": (100, [*fine80("0.1"), "--param", "weights_only_p_weight=0.02",
                                              "--param", "weights_only_eta=100"],
                                        "curiosity-bold-fine80-30-sparse, but from 10 % confidence"),
    "curiosity-bold-fine80-30-extrap": (100, [*fine80("0.3"), "--extrapolate", "on"],
                                        "curiosity-bold-fine80-30, and each weight step that won its parent's cell "
                                        "continued at 0.5, 1 and 2 times its length (--extrapolate on)"),
    "curiosity-bold-fine80-30-waves": (100, [*fine80("0.3"), "--param", "p_add_wave=0.5"],
                                       "curiosity-bold-fine80-30, and half the structural children add a "
                                       "grating or rings node into an output (the direct encoding's patterns)"),
    "curiosity-bold-fine80-30-waves03": (100, [*fine80("0.3"), "--param", "p_add_wave=0.5", "--param",
                                               "wave_weight=0.3"],
                                         "curiosity-bold-fine80-30-waves, the patterns added at weights within "
                                         "±0.3"),
    "curiosity-bold-fine80-30-out": (100, [*fine80("0.3"), "--param", "weights_only_output=1"],
                                     "curiosity-bold-fine80-30, the weights-only children stepping every link into "
                                     "an output node (Gaussian, sigma 0.02) instead of a polynomial mutation"),
    "curiosity-bold-fine80-10-out": (100, [*fine80("0.1"), "--param", "weights_only_output=1"],
                                     "curiosity-bold-fine80-30-out, from 10 % confidence"),
    "curiosity-bold-fine80-30-out25": (100, [*fine80("0.3"), "--param", "weights_only_output=0.25"],
                                       "curiosity-bold-fine80-30, a quarter of the weights-only children stepping "
                                       "the output links (Gaussian, sigma 0.02), the rest polynomial steps"),
    "curiosity-bold-fine50-50": (100, [*BOLD, "--param", "p_weights_only=0.5", "--param", "weights_only_above=0.5"],
                                 "curiosity-bold, but half the children of champions at >= 50 % confidence "
                                 "change only link weights"),
    "curiosity-bolder": (100, ["--selection", "curiosity", "--param", "p_add_node=1", "--param",
                               "p_add_link=1", "--param", "p_remove_node=0.4", "--param", "p_remove_link=0.6"],
                         "curiosity selection, eta 40, every child gains a node and a link"),
    "curiosity-bold-refine": (100, [*BOLD, "--refine", "grad"],
                              "curiosity-bold, and a tenth of each batch gradient steps on the links into the "
                              "output nodes (not black-box)"),
    "curiosity-bold-balance": (100, [*BOLD, "--refine", "grad", "--refine-steps", "1", "--refine-lr", "0.03",
                                     "--refine-balance", "on"],
                               "curiosity-bold, and one gradient step (lr 0.03) on the links into the output nodes "
                               "for a share of each batch that follows gain per evaluation (not black-box)"),
    "curiosity-bold-dense-balance": (100, [*BOLD, "--refine", "grad", "--param", "refine_links=dense",
                                           "--refine-steps", "1", "--refine-balance", "on"],
                                     "curiosity-bold, and one gradient step (lr 0.01) on a dense read-out (every node "
                                     "linked into every output) for a share of each batch that follows gain per "
                                     "evaluation (not black-box)"),
    "curiosity-bold-dense5": (100, [*BOLD, "--refine", "grad", "--param", "refine_links=dense", "--refine-steps", "1",
                                    "--refine-share", "0.05"],
                              "curiosity-bold, and one gradient step (lr 0.01) on a dense read-out for a fixed 5 % "
                              "of each batch (not black-box)"),
    "direct": (100, ["--encoding", "direct", *POLYNOMIAL],
               "the direct encoding with the paper's polynomial mutation from noise, population 100"),
    "direct-squares": (100, ["--encoding", "direct", "--param", "mutation=squares", *NOISE],
                       "the direct encoding, each child one painted square (Square Attack's step)"),
    "direct-squares-curiosity": (100, ["--encoding", "direct", "--param", "mutation=squares", *NOISE,
                                       "--selection", "curiosity"],
                                 "direct-squares with curiosity selection"),
    "direct-squares-flat": (100, ["--encoding", "direct", "--param", "mutation=squares", "--param", "init=flat"],
                            "direct-squares starting from flat colours"),
    "direct-squares-flat-large": (100, ["--encoding", "direct", "--param", "mutation=squares", "--param",
                                        "init=flat", "--param", "square_min=0.05", "--param", "square_max=0.5"],
                                  "direct-squares-flat, sides 5-50 % of the image"),
    "direct-lattice-flat": (100, ["--encoding", "direct", "--param", "mutation=lattice", "--param", "init=flat"],
                            "the direct encoding from flat colours, each child one painted rectangle repeated "
                            "over the image"),
    "direct-patterns-flat": (100, ["--encoding", "direct", "--param", "mutation=patterns", "--param", "init=flat"],
                             "the direct encoding's defaults: from flat colours, each child a painted lattice, an "
                             "added sine grating or added rings"),
    "direct-squares3": (100, ["--encoding", "direct", "--param", "mutation=squares", "--param", "squares=3",
                              *NOISE],
                        "direct-squares, three squares per child"),
    "direct-squares-small": (100, ["--encoding", "direct", "--param", "mutation=squares", *NOISE,
                                   "--param", "square_min=0.01", "--param", "square_max=0.1"],
                             "direct-squares, sides 1-10 % of the image"),
    "direct-squares-large": (100, ["--encoding", "direct", "--param", "mutation=squares", *NOISE,
                                   "--param", "square_min=0.05", "--param", "square_max=0.5"],
                             "direct-squares, sides 5-50 % of the image"),
    # Hybrids (not black-box): each forward + backward pass counts as 3 evaluations. Those measured
    # before --refine-adapt and refine_links existed keep their one lr ("off") and step every CPPN
    # link, so a new folder computes what they did.
    "curiosity-eta15-refine": (100, ["--selection", "curiosity", "--param", "eta=15", "--refine", "grad",
                                     "--refine-lr", "0.1", "--refine-adapt", "off", "--param", "refine_links=all"],
                               "curiosity-eta15, and 10 % of each batch champions refined by 4 gradient steps "
                               "on their CPPN weights (NOT black-box)"),
    "curiosity-eta15-refine30": (100, ["--selection", "curiosity", "--param", "eta=15", "--refine", "grad",
                                       "--refine-share", "0.3", "--refine-lr", "0.1", "--refine-adapt", "off",
                                       "--param", "refine_links=all"],
                                 "curiosity-eta15, and 30 % of each batch refined by 4 gradient steps (NOT black-box)"),
    "direct-refine": (100, ["--encoding", "direct", *POLYNOMIAL, "--refine", "grad", "--refine-adapt", "off"],
                      "the direct encoding, and 10 % of each batch champions whose pixels took 4 Adam steps "
                      "(the default lr 0.01) up their class's log-probability (NOT black-box)"),
    "direct-refine30": (100, ["--encoding", "direct", *POLYNOMIAL, "--refine", "grad", "--refine-lr", "0.01",
                              "--refine-share", "0.3", "--refine-adapt", "off"],
                        "the direct encoding, and 30 % of each batch champions whose pixels took 4 Adam steps "
                        "(lr 0.01) up their class's log-probability (NOT black-box)"),
    "direct-refine60": (100, ["--encoding", "direct", *POLYNOMIAL, "--refine", "grad", "--refine-share", "0.6",
                              "--refine-adapt", "off"],
                        "direct-refine with 60 % of each batch refined (NOT black-box)"),
    "direct-refine-balance": (100, ["--encoding", "direct", *POLYNOMIAL, "--refine", "grad", "--refine-balance", "on"],
                              "direct-refine starting at 10 % of each batch, the share following gain per "
                              "evaluation (NOT black-box)"),
    "direct-refine60-adapt": (100, ["--encoding", "direct", *POLYNOMIAL, "--refine", "grad", "--refine-share", "0.6",
                                    "--refine-adapt", "on"],
                              "direct-refine60 with a refine step per class, 1/5 success rule (today's "
                              "default; NOT black-box)"),
    "direct-refine90": (100, ["--encoding", "direct", *POLYNOMIAL, "--refine", "grad", "--refine-share", "0.9",
                              "--refine-adapt", "off"],
                        "direct-refine with 90 % of each batch refined (NOT black-box)"),
    "curiosity-refine": (100, ["--selection", "curiosity", "--refine", "grad", "--refine-adapt", "off"],
                         "curiosity selection (eta 40), and 10 % of each batch champions refined by 4 gradient "
                         "steps at the default --refine-lr (NOT black-box)"),
}
DEFAULT_AT = (20_000, 50_000, 200_000)


def folder_of(root: Path, variant: str, crops: int, seed: int) -> Path:
    return root / f"{variant}-crops{crops}-seed{seed}"


def read_log(folder: Path) -> list[dict]:
    log = folder / "log.jsonl"
    if not log.is_file():
        return []
    records = []
    for line in log.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line being written; resume repairs it
    return records


def command(variant: str, folder: Path, generations: int, seed: int | None, args: argparse.Namespace) -> list[str]:
    """The ``evofool`` command that brings ``folder`` to ``generations`` generations: a resume
    where it holds a checkpoint (the run keeps its recorded seed; ``seed`` may be None), else
    a new run of ``seed``."""
    evofool = [sys.executable, "-m", "evofool"]
    common = ["--quiet", "--no-gallery"]
    if (folder / "checkpoint.safetensors").is_file():
        return [*evofool, "resume", str(folder), "--generations", str(generations), *common]
    if seed is None:
        raise ValueError(f"{folder} holds no checkpoint to resume: a new run needs its seed")
    population, flags, _ = VARIANTS[variant]
    encoding = [] if "--encoding" in flags else ["--encoding", "cppn"]
    return [*evofool, "run", "--model", args.model, *encoding, *flags, "--population", str(population),
            "--generations", str(generations), "--seed", str(seed), "--crops", str(args.crops),
            "--threads", "1", "--checkpoint-every", str(args.checkpoint_every), "--out", str(folder), *common]


def generations_for(variant: str, budget: int) -> int:
    """Generations until a variant's run has spent ``budget`` evaluations: its population
    each, plus 3 per gradient step of ``--refine grad`` after the first (random) one."""
    population, flags, _ = VARIANTS[variant]

    def flag(name: str, default: float) -> float:
        return float(flags[flags.index(name) + 1]) if name in flags else default

    refined = 0
    if "--refine" in flags and flags[flags.index("--refine") + 1] == "grad":
        # The run's own rule for its places, and its defaults for the flags not given.
        from evofool.config import RunConfig
        from evofool.emitters import EVALUATIONS_PER_GRADIENT_STEP
        from evofool.job import emitter_sizes

        defaults = RunConfig()
        config = RunConfig(population=population, refine="grad",
                           refine_share=flag("--refine-share", defaults.refine_share),
                           refine_steps=int(flag("--refine-steps", defaults.refine_steps)))
        refined = emitter_sizes(config)[1] * EVALUATIONS_PER_GRADIENT_STEP * config.refine_steps
    return 1 + max(0, math.ceil((budget - population) / (population + refined)))


def more_generations(folder: Path, budget: int) -> int | None:
    """For a run that stopped short of ``budget`` evaluations (its generations spend a varying
    number: ``--refine-balance on``), the generations to go on to, at its last generation's
    rate; None when it is there."""
    records = read_log(folder)
    if not records or records[-1]["evaluations"] >= budget:
        return None
    last = records[-1]["evaluations"] - (records[-2]["evaluations"] if len(records) > 1 else 0)
    return records[-1]["generation"] + max(1, math.ceil((budget - records[-1]["evaluations"]) / max(last, 1)))


def run_all(args: argparse.Namespace) -> int | None:
    """Brings every variant's folder to the budget, ``--parallel`` runs at a time; returns
    the signal that stopped them, if one did."""
    todo = []
    for seed in args.seeds:
        for variant in args.variants:
            folder = folder_of(args.root, variant, args.crops, seed)
            records = read_log(folder)
            if records and records[-1]["evaluations"] >= args.budget:
                continue
            todo.append((variant, folder, command(variant, folder, generations_for(variant, args.budget), seed, args)))
    running: list[tuple[str, Path, subprocess.Popen, float]] = []
    stopped: list[int] = []

    def forward(signum, frame) -> None:
        # A run stops at the end of its generation on SIGINT/SIGTERM and saves a checkpoint.
        # Passing the signal on lets ``kill`` or Ctrl-C on this script stop every run it started
        # (they used to go on alone); the runs have their own session, so a terminal's Ctrl-C
        # reaches them once, from here (a second one would abandon their generation).
        stopped.append(signum)
        todo.clear()
        for _, _, proc, _ in running:
            if proc.poll() is None:
                proc.send_signal(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, forward)
    while todo or running:
        while todo and len(running) < args.parallel:
            variant, folder, cmd = todo.pop(0)
            print(f"[{variant}] {' '.join(cmd[1:])}", file=sys.stderr)
            running.append((variant, folder, subprocess.Popen(cmd, start_new_session=True), time.perf_counter()))
        time.sleep(2)
        for entry in list(running):
            variant, folder, proc, start = entry
            if proc.poll() is not None:
                running.remove(entry)
                print(f"[{variant}] exit {proc.returncode} after {time.perf_counter() - start:.0f} s",
                      file=sys.stderr)
                more = None if proc.returncode or stopped else more_generations(folder, args.budget)
                if more is not None:  # --refine-balance: evaluations per generation vary
                    todo.append((variant, folder, command(variant, folder, more, None, args)))  # a resume: its own seed
    return stopped[0] if stopped else None


def at_budget(records: list[dict], evaluations: int) -> dict | None:
    """The last record within ``evaluations`` (None if the run has not got that far)."""
    if not records or records[-1]["evaluations"] < evaluations:
        return None
    best = None
    for record in records:
        if record["evaluations"] > evaluations:
            break
        best = record
    return best


def table(args: argparse.Namespace) -> list[dict]:
    rows = []
    for variant, seed in ((v, s) for v in args.variants for s in args.seeds):
        folder = folder_of(args.root, variant, args.crops, seed)
        records = read_log(folder)
        for budget in args.at:
            record = at_budget(records, budget)
            # Engine time to this budget (a longer run's folder serves every smaller budget).
            seconds = 0.0 if record is None else sum(r.get("seconds", 0.0) for r in records
                                                     if r["evaluations"] <= record["evaluations"])
            rows.append({"variant": variant, "seed": seed, "crops": args.crops, "budget": budget,
                         "evaluations": None if record is None else record["evaluations"],
                         "generation": None if record is None else record["generation"],
                         "median": None if record is None else record["median"],
                         "n99": None if record is None else record["n99"],
                         "n9999": None if record is None else record["n9999"],
                         "done": records[-1]["evaluations"] if records else 0,
                         "engine_seconds": round(seconds, 1)})
    return rows


def print_table(rows: list[dict]) -> None:
    w = max([len("variant"), *(len(r["variant"]) for r in rows)])
    print(f"{'variant':<{w}} {'seed':>4} {'crops':>5} {'budget':>8} {'gen':>5} {'median':>9} {'>=99%':>6} {'>=99.99%':>8}"
          f" {'done':>8} {'engine s':>9}")
    for r in rows:
        if r["median"] is None:
            print(f"{r['variant']:<{w}} {r['seed']:>4} {r['crops']:>5} {r['budget']:>8} {'-':>5} {'(not reached)':>9}"
                  f" {'':>6} {'':>8} {r['done']:>8} {r['engine_seconds']:>9}")
        else:
            print(f"{r['variant']:<{w}} {r['seed']:>4} {r['crops']:>5} {r['budget']:>8} {r['generation']:>5} "
                  f"{100 * r['median']:>8.2f}% {r['n99']:>6} {r['n9999']:>8} {r['done']:>8} "
                  f"{r['engine_seconds']:>9}")


# The paper's medians after 5,000 generations × 400 (10 crops), drawn on every plot, and the
# side their label goes (the CPPN's right of the legend, the direct one's left of the curves).
PAPER_MEDIANS = {"CPPN": (88.11, "right"), "direct": (21.59, "left")}


def plot(args: argparse.Namespace, path: Path) -> None:
    """Median confidence and classes >= 99 % against evaluations: one colour per variant, one
    line style per seed."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    fig = Figure(figsize=(11, 4.2), dpi=120)
    left, right = fig.subplots(1, 2)
    styles = ("-", "--", ":", "-.")
    for i, variant in enumerate(args.variants):
        for j, seed in enumerate(args.seeds):
            records = [r for r in read_log(folder_of(args.root, variant, args.crops, seed))
                       if r["evaluations"] <= args.budget]
            if not records:
                continue
            x = [r["evaluations"] for r in records]
            look = {"color": f"C{i % 10}", "linestyle": styles[j % len(styles)],
                    "label": variant if len(args.seeds) == 1 else f"{variant}, seed {seed}"}
            left.plot(x, [100 * r["median"] for r in records], **look)
            right.plot(x, [r["n99"] for r in records], **look)
    for encoding, (median, side) in PAPER_MEDIANS.items():
        left.axhline(median, color="grey", linestyle=":", linewidth=1)
        left.text(0.99 if side == "right" else 0.01, median, f" paper, {encoding}, 2M evaluations: {median} % ",
                  color="grey", fontsize=7, va="bottom", ha=side, transform=left.get_yaxis_transform())
    # Legends top left, where the curves have not risen yet (the paper's line is labelled right).
    for axes, label, where in ((left, "median champion confidence (%)", "upper left"),
                               (right, "classes >= 99 %", "upper left")):
        axes.set_xlabel("evaluations (genomes scored)")
        axes.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:g}k"))
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8, loc=where)
    seeds = ", ".join(str(seed) for seed in args.seeds)
    fig.suptitle(f"{args.model}, {args.crops} crop(s), seed{'s' if len(args.seeds) > 1 else ''} {seeds}: "
                 f"sample efficiency on 1,000 classes")
    fig.tight_layout()
    fig.savefig(path)
    print(f"plot: {path}", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=20_000, help="evaluations each variant runs to")
    ap.add_argument("--variants", nargs="+", default=["paper", "default", "curiosity"], choices=VARIANTS)
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--crops", type=int, choices=(1, 10), default=1)
    ap.add_argument("--seed", "--seeds", dest="seeds", type=int, nargs="+", default=[0],
                    help="one run folder per variant and seed")
    ap.add_argument("--root", type=Path, default=Path("runs/budget"))
    ap.add_argument("--parallel", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--checkpoint-every", type=int, default=25)
    ap.add_argument("--at", type=int, nargs="+", default=None, help="budgets of the table (default: 20k 50k 200k "
                    "up to --budget)")
    ap.add_argument("--plot", type=Path, default=None, help="write the curves up to --budget here (PNG)")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    ap.add_argument("--no-run", action="store_true", help="only read the folders")
    args = ap.parse_args()
    if args.at is None:
        args.at = [b for b in DEFAULT_AT if b <= args.budget] or [args.budget]
    stopped = None if args.no_run else run_all(args)
    rows = table(args)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        for variant in args.variants:
            print(f"# {variant}: {VARIANTS[variant][2]}")
        print_table(rows)
    if args.plot:
        plot(args, args.plot)
    if stopped is not None:
        sys.exit(128 + stopped)  # the shell's code for a process stopped by that signal


if __name__ == "__main__":
    main()
