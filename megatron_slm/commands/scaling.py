"""Scaling analysis of interleaved SLMs: plan an isoFLOP sweep, collect runs, fit laws, plot.

  python tools/scaling.py plan --family qwen2.5 --budgets 1e19,3e19,1e20 --out sweep/
  sbatch sweep/submit.sbatch
  python tools/scaling.py collect --runs 'sweep/runs/*' --plan sweep/plan.csv --out sweep/results.csv
  python tools/scaling.py fit --runs sweep/results.csv --out sweep/fit.json --bootstrap 1000 --predict 1e21
  python tools/scaling.py plot --runs sweep/results.csv --fit sweep/fit.json --compare textless,chinchilla --out sweep/plots/
  python tools/scaling.py report --arm text-init=sweeps/a --arm textless=sweeps/b --out report/REPORT.md

See docs/scaling.md for the method (Chinchilla approaches 2 and 3) and the file formats.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from megatron_slm.config import ConfigError, load_yaml
from megatron_slm.console import error
from megatron_slm.outputs import OutputError, guard_reused_dir
from megatron_slm.scaling import analysis, collect, plan
from megatron_slm.scaling.fit import REFERENCE_LAWS, FitError
from megatron_slm.scaling.results import ResultsError, read_results, write_results


class UsageError(Exception):
    """A user mistake: printed as one line, exit code 2."""


def _floats(text: str, flag: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"{flag}: expected comma-separated numbers like 1e19,3e19, got {text!r}") from None


def _compare(text: str) -> dict:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in REFERENCE_LAWS]
    if unknown:
        raise UsageError(f"--compare: unknown law(s) {', '.join(unknown)}; known: {', '.join(REFERENCE_LAWS)}")
    return {n: REFERENCE_LAWS[n] for n in names}


def _read_json(path: str, flag: str) -> dict:
    if not Path(path).is_file():
        raise UsageError(f"{flag} {path}: file does not exist (run `tools/scaling.py fit` first)")
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise UsageError(f"{flag} {path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{flag} {path}: expected a JSON object (a fit report)")
    return data


# --------------------------------------------------------------------------- plan


def cmd_plan(args) -> int:
    base = {}
    if args.base_config:
        path = Path(args.base_config)
        if not path.is_file():
            raise UsageError(f"--base-config {path}: file does not exist")
        try:
            base = load_yaml(path.read_text(encoding="utf-8"), f"--base-config {path}") or {}
        except (ConfigError, UnicodeDecodeError) as e:
            raise UsageError(str(e)) from None
    prior = _compare(args.prior)[args.prior]
    out = Path(args.out)
    p = plan.make_plan(budgets=_floats(args.budgets, "--budgets"), family=args.family,
                       presets=[x for x in (args.presets or "").split(",") if x], sizes=args.sizes,
                       sizes_per_budget=args.sizes_per_budget, span=args.span, prior=prior, params=args.params,
                       base_config=base, overrides=args.set, runs_dir=args.runs_dir or out / "runs",
                       init_from=args.init_from, min_tokens_per_param=args.min_tokens_per_param,
                       max_tokens_per_param=args.max_tokens_per_param, min_steps=args.min_steps)
    try:  # written in place: a re-plan into its own sweep dir is fine, someone else's directory is not
        guard_reused_dir(out, "scaling plan", [args.base_config, args.init_from], own_file="plan.csv")
    except OutputError as e:
        raise UsageError(str(e)) from None
    files = plan.write_plan(p, out, nodes=args.nodes, gpus_per_node=args.gpus_per_node,
                            time=args.time, partition=args.partition, account=args.account,
                            max_parallel=args.max_parallel)
    print(f"{'run':<28} {'N':>10} {'tokens':>10} {'tok/N':>7} {'steps':>8}")
    for r in p.runs:
        print(f"{r.name:<28} {r.params:>10.3g} {r.tokens:>10.3g} {r.tokens / r.params:>7.1f} {r.steps:>8}")
    print(f"planned {len(p.runs)} runs over {len({r.budget for r in p.runs})} budgets "
          f"(N = {args.params} parameters); skipped {len(p.skipped)}")
    for name, why in p.skipped:
        print(f"  skipped {name}: {why}")
    print(f"wrote {files['configs']}/*.yaml, {files['plan_csv']}, {files['sbatch']}")
    return 0


# --------------------------------------------------------------------------- collect


def cmd_collect(args) -> int:
    budgets = plan.read_plan_budgets(args.plan) if args.plan else None
    got = collect.collect_runs(args.runs, budgets, include_incomplete=args.include_incomplete, progress=True)
    for pattern in got.unmatched:
        print(f"warning: --runs {pattern!r} matched no directory", file=sys.stderr)
    for path, why in got.skipped:
        print(f"  skipped {path}: {why}")
    if not got.rows:
        raise UsageError(f"no finished run found in {', '.join(args.runs)} ({len(got.skipped)} skipped)")
    columns = write_results(args.out, got.rows)
    print(f"collected {len(got.rows)} runs, skipped {len(got.skipped)}; wrote {args.out} ({len(columns)} columns)")
    return 0


# --------------------------------------------------------------------------- fit


def cmd_fit(args) -> int:
    if args.from_fit:
        report = _read_json(args.from_fit, "--from-fit")
    else:
        if not args.runs:
            raise UsageError("give --runs results.csv (or --from-fit fit.json with --predict)")
        results = read_results(args.runs)
        report = analysis.analyse(results, args.params_column, args.loss_column, bootstrap=args.bootstrap,
                                  seed=args.seed, progress=True)
        print(analysis.report_summary(report))
        if args.out:
            try:
                text = analysis.report_json(report, args.runs)
            except ResultsError as e:
                raise UsageError(f"{e}; not writing {args.out}") from None
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(text + "\n")
            print(f"wrote {args.out}")
    if args.predict:
        law = analysis.law_from_report(report, args.from_fit or "fit")
        for c in _floats(args.predict, "--predict"):
            p = analysis.predict(law, c)
            print(f"C = {c:.3g} FLOPs: N_opt = {p['N_opt']:.4g}, D_opt = {p['D_opt']:.4g} tokens "
                  f"({p['tokens_per_param']:.1f} tokens/param), predicted loss = {p['loss']:.4f}")
    return 0


# --------------------------------------------------------------------------- plot


def cmd_plot(args) -> int:
    from megatron_slm.scaling.plots import plot_all

    results = read_results(args.runs)
    if args.fit:
        report = _read_json(args.fit, "--fit")
        analysis.law_from_report(report, args.fit)
    else:
        report = analysis.analyse(results, args.params_column, args.loss_column)
    sweep = analysis.load_sweep(results, report.get("params_column", args.params_column),
                                report.get("loss_column", args.loss_column))
    metrics = {m: results.numbers(m, positive=False, allow_empty=True) for m in results.metric_columns()}
    paths = plot_all(sweep, report, _compare(args.compare) if args.compare else {}, args.out, metrics)
    print(f"wrote {len(paths)} plots: " + ", ".join(str(p) for p in paths))
    return 0


# --------------------------------------------------------------------------- report


def cmd_report(args) -> int:
    from megatron_slm.scaling.report import load_arm, write_report

    arms = []
    for spec in args.arm:
        name, sep, directory = spec.partition("=")
        if not sep or not name.strip() or not directory.strip():
            raise UsageError(f"--arm {spec!r}: expected NAME=DIR (a sweep directory with results.csv and fit.json)")
        arms.append(load_arm(name.strip(), directory.strip()))
    notes = ""
    if args.notes:
        if not Path(args.notes).is_file():
            raise UsageError(f"--notes {args.notes}: file does not exist")
        notes = Path(args.notes).read_text()
    figures = write_report(arms, args.out, args.title, notes)
    print(f"wrote {args.out} with {len(figures)} figures in {Path(args.out).parent}")
    return 0


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("plan", help="isoFLOP sweep -> pretrain_slm.py configs + SLURM array script",
                       description="For each compute budget C, pick model sizes N and train each for "
                                   "D = C/(6N) tokens; write one trainer config per run, plan.csv and "
                                   "submit.sbatch (task i runs line i of configs.txt).")
    p.add_argument("--family", help=f"model family: {', '.join(plan.FAMILIES)}")
    p.add_argument("--presets", help="comma-separated presets instead of a family (e.g. tiny)")
    p.add_argument("--budgets", required=True, help="compute budgets in FLOPs, comma-separated (1e19,3e19,1e20)")
    p.add_argument("--out", required=True, help="sweep directory to write")
    p.add_argument("--sizes", choices=("ladder", "presets"), default="ladder",
                   help="ladder: shapes built from the family's rules around the prior N_opt(C) (default); "
                        "presets: the family's published sizes")
    p.add_argument("--sizes-per-budget", type=int, default=7, help="ladder: sizes per isoFLOP set (default 7)")
    p.add_argument("--span", type=float, default=4.0,
                   help="ladder: sizes range over [N_opt/span, N_opt*span] (default 4)")
    p.add_argument("--prior", default="textless", choices=sorted(REFERENCE_LAWS),
                   help="law that centres the ladder (default textless, Cuervo & Marxer 2024)")
    p.add_argument("--params", choices=("total", "non_embedding"), default="total",
                   help="which parameter count N means in C = 6ND (default total; fit with the matching column)")
    p.add_argument("--base-config", help="YAML config every run starts from (data blend, batch, parallelism)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key in every run (repeatable), e.g. train.global_batch_size=256")
    p.add_argument("--runs-dir", help="where runs save (checkpoint.save); default <out>/runs")
    p.add_argument("--init-from", help="with --sizes presets: converted checkpoint per preset, e.g. 'ckpt/{preset}'")
    p.add_argument("--min-tokens-per-param", type=float, default=0.5, help="skip pairs below this D/N (default 0.5)")
    p.add_argument("--max-tokens-per-param", type=float, default=2000.0, help="skip pairs above this D/N (default 2000)")
    p.add_argument("--min-steps", type=int, default=100, help="skip runs shorter than this many steps (default 100)")
    p.add_argument("--nodes", type=int, default=1, help="SLURM nodes per run (default 1)")
    p.add_argument("--gpus-per-node", type=int, default=8, help="GPUs per node (default 8)")
    p.add_argument("--time", default="24:00:00", help="SLURM time limit per run")
    p.add_argument("--partition", help="SLURM partition")
    p.add_argument("--account", help="SLURM account")
    p.add_argument("--max-parallel", type=int, help="at most this many array tasks at once")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("collect", help="run directories -> results CSV (one row per finished run)",
                       description="Read config.yaml, slm_model.json and metrics.jsonl of each run directory. "
                                   "Unfinished or broken runs are skipped and listed with the reason.")
    p.add_argument("--runs", required=True, nargs="+", help="run directories or glob patterns ('runs/*')")
    p.add_argument("--out", required=True, help="CSV to write")
    p.add_argument("--plan", help="plan.csv of the sweep: adds each run's budget (exact isoFLOP sets)")
    p.add_argument("--include-incomplete", action="store_true", help="keep unfinished runs (complete=0)")
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("fit", help="fit L(N,D) (approach 3), isoFLOP minima (approach 2), metric power laws",
                       description="Chinchilla approach 3 (Huber on log residuals, L-BFGS from a grid), "
                                   "approach 2 (parabola per isoFLOP set), power laws of downstream metrics.")
    p.add_argument("--runs", help="results CSV from `collect`")
    p.add_argument("--out", help="fit report JSON to write")
    p.add_argument("--bootstrap", type=int, default=0, help="bootstrap samples for 95%% CIs (e.g. 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--params-column", default="params", help="N column: params (default) or non_embedding_params")
    p.add_argument("--loss-column", default="loss", help="loss column (default loss; e.g. speech_loss)")
    p.add_argument("--predict", help="compute budget(s) in FLOPs: print N_opt, D_opt and the predicted loss")
    p.add_argument("--from-fit", help="predict from this fit JSON instead of fitting --runs")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("plot", help="PNG plots: isoFLOP curves, frontier, allocation, metrics",
                       description="Writes isoflop.png, frontier.png, allocation.png and metric_*.png.")
    p.add_argument("--runs", required=True, help="results CSV from `collect`")
    p.add_argument("--fit", help="fit JSON from `fit` (default: fit now, without bootstrap)")
    p.add_argument("--compare", default="", help=f"reference laws to draw: {','.join(REFERENCE_LAWS)}")
    p.add_argument("--out", required=True, help="directory for the PNGs")
    p.add_argument("--params-column", default="params", help="N column when fitting now")
    p.add_argument("--loss-column", default="loss", help="loss column when fitting now")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("report", help="Markdown report of one or more fitted sweeps (arms) side by side",
                       description="Tables of the fits (bootstrap CIs), allocation exponents, isoFLOP minima and "
                                   "downstream metrics per budget, plots of the arms on common axes; each arm's "
                                   "isoflop/allocation plots are copied next to the report.")
    p.add_argument("--arm", action="append", required=True, metavar="NAME=DIR",
                   help="a sweep directory with results.csv, fit.json and plots/ (repeatable)")
    p.add_argument("--out", required=True, help="the Markdown file to write (figures go next to it)")
    p.add_argument("--title", default="Scaling report", help="report title")
    p.add_argument("--notes", help="a Markdown file inserted under the title (settings, caveats)")
    p.set_defaults(func=cmd_report)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, ResultsError, plan.PlanError, ConfigError, FitError) as e:
        error(e)
        return 2


if __name__ == "__main__":
    sys.exit(main())
