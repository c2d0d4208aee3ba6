"""From a results table to the fit report (`tools/scaling.py fit`, and `plot` without --fit).

The report is one JSON-able dict: the approach-3 coefficients at the top level
(`E, A, B, alpha, beta, a, b, G`), `ci` when bootstrapped, `approach2`, and `metrics`
(power laws of downstream metrics in compute). Compute is C = 6 N D with the N column the
fit uses (`params` by default, or `non_embedding_params`), so both approaches and the
allocation formulas share one definition of C.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from megatron_slm.scaling.fit import (HUBER_DELTA, LossLaw, approach2, bootstrap_approach2, bootstrap_loss_law,
                                      fit_loss_law, fit_power_law)
from megatron_slm.scaling.results import Results, ResultsError, group_isoflop, need_points

MIN_RUNS = 6  # five coefficients plus at least one degree of freedom


@dataclass
class Sweep:
    """The numeric columns a fit uses, validated, with isoFLOP sets."""

    N: np.ndarray
    D: np.ndarray
    L: np.ndarray
    C: np.ndarray
    groups: list[np.ndarray]
    runs: list[str]


def load_sweep(results: Results, params_column: str = "params", loss_column: str = "loss") -> Sweep:
    results.require("run", params_column, "tokens", loss_column)
    N = results.numbers(params_column)
    D = results.numbers("tokens")
    L = results.numbers(loss_column)
    need_points(results, len(L), MIN_RUNS, "a scaling-law fit (5 coefficients)")
    if np.unique(N).size < 2 or np.unique(D).size < 2:
        raise ResultsError(f"{results.path}: all runs share one model size or token count; "
                           "a fit needs several of each")
    C = 6.0 * N * D
    budget = results.numbers("budget", allow_empty=True) if results.has("budget") else None
    return Sweep(N, D, L, C, group_isoflop(C, budget), results.strings("run"))


def metric_laws(results: Results, sweep: Sweep) -> dict:
    """Per downstream metric: a power law in C through each isoFLOP set's best value."""
    out = {}
    for name in results.metric_columns():
        values = results.numbers(name, positive=False, allow_empty=True)
        values[values <= 0] = np.nan  # a power law needs positive values (accuracy 0 = no signal)
        xs, ys = [], []
        for g in sweep.groups:
            v = values[g]
            ok = ~np.isnan(v)
            if ok.any():
                best = g[ok][np.argmax(v[ok])]
                xs.append(sweep.C[best])
                ys.append(values[best])
        if len(xs) < 2:
            out[name] = {"error": f"{len(xs)} compute budget(s) with a value; a power law needs 2"}
            continue
        law = fit_power_law(xs, ys)
        out[name] = {"k": law.k, "gamma": law.gamma, "r2": law.r2, "points": law.points,
                     "compute": [float(x) for x in xs], "best": [float(y) for y in ys]}
    return out


def analyse(results: Results, params_column: str = "params", loss_column: str = "loss", bootstrap: int = 0,
            seed: int = 0, progress: bool = False) -> dict:
    sweep = load_sweep(results, params_column, loss_column)
    law, objective = fit_loss_law(sweep.N, sweep.D, sweep.L)
    report: dict = {**law.as_dict(), "objective": objective, "huber_delta": HUBER_DELTA,
                    "params_column": params_column, "loss_column": loss_column, "runs": len(sweep.L),
                    "isoflop_sets": len(sweep.groups)}
    if bootstrap:
        report["ci"], report["ci_used"] = bootstrap_loss_law(sweep.N, sweep.D, sweep.L, bootstrap, seed=seed,
                                                             progress=progress, center=law)
        report["ci_level"] = 0.95
        report["bootstrap"] = bootstrap
    report["approach2"] = approach2(sweep.N, sweep.L, sweep.C, sweep.groups)
    if bootstrap and "error" not in report["approach2"]:
        report["approach2"]["ci"] = bootstrap_approach2(sweep.N, sweep.L, sweep.C, sweep.groups, bootstrap, seed=seed)
    report["metrics"] = metric_laws(results, sweep)
    return report


LAW_KEYS = ("E", "A", "B", "alpha", "beta")


def report_json(report: dict, where: str) -> str:
    """The report as JSON. The fitted law must be finite; a value derived from it that is
    undefined (G, a, b and their CIs when a term is flat) is written as null, never as the
    invalid JSON tokens NaN/Infinity."""
    bad = [k for k in LAW_KEYS if not math.isfinite(report[k])]
    if bad:
        raise ResultsError(f"the fit of {where} has non-finite {', '.join(bad)}")

    def clean(x):
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        if isinstance(x, float) and not math.isfinite(x):
            return None
        return x

    return json.dumps(clean(report), indent=2, allow_nan=False)


def has_allocation(report: dict) -> bool:
    g = report.get("G")
    return isinstance(g, (int, float)) and math.isfinite(g)


def law_from_report(report: dict, where: str = "fit report") -> LossLaw:
    try:
        return LossLaw(**{k: float(report[k]) for k in LAW_KEYS})
    except (KeyError, TypeError, ValueError) as e:
        raise ResultsError(f"{where}: needs numeric keys E, A, B, alpha, beta ({e})") from None


def predict(law: LossLaw, compute: float) -> dict:
    if not (compute > 0 and math.isfinite(compute)):
        raise ResultsError(f"--predict: compute must be a positive number of FLOPs, got {compute!r}")
    if not math.isfinite(law.G):
        raise ResultsError("--predict: the fit has a flat term (alpha A or beta B = 0), so it gives no "
                           "compute-optimal allocation to predict from")
    n, d, loss = law.optimal(compute)
    return {"compute": compute, "N_opt": float(n), "D_opt": float(d), "loss": float(loss),
            "tokens_per_param": float(d / n)}


def report_summary(report: dict) -> str:
    lines = [f"approach 3 ({report['runs']} runs): L = {report['E']:.4g} + {report['A']:.4g}/N^{report['alpha']:.4f}"
             f" + {report['B']:.4g}/D^{report['beta']:.4f}",
             f"  allocation: N_opt = {report['G']:.4g} (C/6)^{report['a']:.4f}, D_opt = (C/6)^{report['b']:.4f} / G"]
    if not has_allocation(report):
        lines.append("  warning: a flat term (alpha A or beta B = 0): the loss does not trade N against D in these "
                     "runs, so there is no compute-optimal allocation (too little training per run?)")
    for k, (lo, hi) in report.get("ci", {}).items():
        lines.append(f"  {k:>5} 95% CI [{lo:.4g}, {hi:.4g}]")
    if report.get("ci_used", report.get("bootstrap")) != report.get("bootstrap"):
        lines.append(f"  ({report['ci_used']} of {report['bootstrap']} bootstrap fits converged; the rest ran off "
                     f"to infinity and are left out)")
    a2 = report["approach2"]
    if "error" in a2:
        lines.append(f"approach 2: skipped -- {a2['error']}")
    else:
        lines.append(f"approach 2 ({len(a2['minima'])} isoFLOP minima): a = {a2['a']:.4f}, b = {a2['b']:.4f}")
        ci2 = a2.get("ci", {})
        if "a" in ci2:
            lines.append(f"  a 95% CI [{ci2['a'][0]:.4g}, {ci2['a'][1]:.4g}] (residual bootstrap, "
                         f"{ci2['used']} of {ci2['samples']} samples with 2+ minima)")
        elif ci2:
            lines.append(f"  no CI: {ci2['error']}")
    for s in a2["skipped"]:
        lines.append(f"  set at C={s['compute']:.3g} ({s['runs']} runs) skipped: {s['reason']}")
    for name, m in report["metrics"].items():
        lines.append(f"metric {name}: " + (m["error"] if "error" in m else
                                         f"{m['k']:.4g} * C^{m['gamma']:.4f} (R^2 {m['r2']:.3f}, {m['points']} budgets)"))
    return "\n".join(lines)
