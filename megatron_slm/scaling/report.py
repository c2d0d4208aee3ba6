"""A Markdown report of fitted sweeps side by side (`tools/scaling.py report`).

An *arm* is one sweep directory with `results.csv` (collect), `fit.json` (fit) and optionally
`plots/` (plot): e.g. interleaved-from-a-text-LM, interleaved-from-scratch and speech-only runs
at matched compute. The report puts their fits, bootstrap intervals, allocation exponents and
downstream accuracies in tables, draws the arms on common axes (`arms_frontier.png`,
`arms_<metric>.png`) and copies each arm's isoFLOP and allocation plots next to it, so the
report directory is self-contained (it can be committed or attached as is).
"""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from megatron_slm.scaling.analysis import Sweep, law_from_report, load_sweep
from megatron_slm.scaling.results import Results, ResultsError, read_results

ARM_PLOTS = ("isoflop.png", "allocation.png")


@dataclass
class Arm:
    name: str
    directory: Path
    results: Results
    fit: dict
    sweep: Sweep

    def metric(self, name: str) -> np.ndarray:
        if name not in self.results.columns:
            return np.full(len(self.results), np.nan)
        return self.results.numbers(name, positive=False, allow_empty=True)


def load_arm(name: str, directory: str | Path) -> Arm:
    directory = Path(directory)
    fit_path = directory / "fit.json"
    if not fit_path.is_file():
        raise ResultsError(f"arm {name!r}: {fit_path} does not exist (run `tools/scaling.py fit --out` first)")
    try:
        fit = json.loads(fit_path.read_text())
    except json.JSONDecodeError as e:
        raise ResultsError(f"arm {name!r}: {fit_path} is not valid JSON ({e})") from None
    law_from_report(fit, str(fit_path))
    results = read_results(directory / "results.csv")
    sweep = load_sweep(results, fit.get("params_column", "params"), fit.get("loss_column", "loss"))
    return Arm(name, directory, results, fit, sweep)


def _g(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "–"
    return f"{x:.{digits}g}"


def _ci(report: dict, key: str, value: Optional[float] = None, ci: Optional[dict] = None) -> str:
    value = report.get(key) if value is None else value
    ci = report.get("ci", {}) if ci is None else ci
    text = _g(value)
    if key in ci:
        text += f" [{_g(ci[key][0])}, {_g(ci[key][1])}]"
    return text


def _budgets(arm: Arm) -> list[tuple[float, np.ndarray]]:
    """(budget, run indices) per isoFLOP set: the planned budget when the table has it (runs of
    one budget differ by a step's worth of compute), else the set's geometric-mean compute."""
    planned = arm.results.numbers("budget", allow_empty=True) if arm.results.has("budget") else None
    out = []
    for g in arm.sweep.groups:
        c = planned[g[0]] if planned is not None and np.isfinite(planned[g[0]]) else np.exp(np.log(arm.sweep.C[g]).mean())
        out.append((float(c), g))
    return out


def metric_names(arms: Sequence[Arm]) -> list[str]:
    names: list[str] = []
    for arm in arms:
        names += [m for m in arm.results.metric_columns() if m not in names]
    return names


def _plots():
    from megatron_slm.scaling import plots  # matplotlib loads only when a report draws

    return plots


def plot_arms_frontier(arms: Sequence[Arm], path: Path) -> None:
    plt = _plots().plt
    fig, ax = plt.subplots(figsize=(7, 5))
    c_axis = np.geomspace(min(a.sweep.C.min() for a in arms) / 1.5, max(a.sweep.C.max() for a in arms) * 1.5, 200)
    for i, arm in enumerate(arms):
        color = f"C{i}"
        ax.scatter(arm.sweep.C, arm.sweep.L, s=10, color=color, alpha=0.35)
        best = [g[np.argmin(arm.sweep.L[g])] for _, g in _budgets(arm)]
        ax.plot(arm.sweep.C[best], arm.sweep.L[best], "o", color=color, ms=6)
        law = law_from_report(arm.fit)
        ax.plot(c_axis, law.optimal(c_axis)[2], "-", color=color, lw=1.8,
                label=f"{arm.name}: alpha={law.alpha:.2f}, beta={law.beta:.2f}, E={law.E:.2f}")
    ax.set_xscale("log")
    ax.set_xlabel("training compute C = 6ND (FLOPs)")
    ax.set_ylabel(f"final validation {arms[0].fit.get('loss_column', 'loss')}")
    ax.set_title("loss vs compute: every run (faint), best per budget (o), fitted L_opt(C)", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    _plots().save_figure(fig, path)


def plot_arms_metric(arms: Sequence[Arm], name: str, path: Path) -> None:
    plt = _plots().plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, arm in enumerate(arms):
        values = arm.metric(name)
        ok = ~np.isnan(values)
        if not ok.any():
            continue
        color = f"C{i}"
        ax.scatter(arm.sweep.C[ok], values[ok], s=10, color=color, alpha=0.35)
        xs, ys = [], []
        for c, g in _budgets(arm):
            v = values[g]
            if (~np.isnan(v)).any():
                xs.append(c)
                ys.append(np.nanmax(v))
        ax.plot(xs, ys, "o-", color=color, label=f"{arm.name} (best per budget)")
    if name.endswith("/accuracy"):
        ax.axhline(0.5, color="0.5", ls=":", lw=1, label="chance (2 candidates)")
    ax.set_xscale("log")
    ax.set_xlabel("training compute C = 6ND (FLOPs)")
    ax.set_ylabel(name)
    ax.set_title(f"{name} vs compute: every run (faint) and the best per budget", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    _plots().save_figure(fig, path)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def fits_table(arms: Sequence[Arm]) -> list[str]:
    rows = ["| arm | runs | budgets | E | alpha | beta | a = N_opt exponent (approach 3) | "
            "a (approach 2) | b = D_opt exponent (approach 3) | b (approach 2) |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for arm in arms:
        f, a2 = arm.fit, arm.fit["approach2"]
        ci2 = a2.get("ci", {})
        a2_a = "–" if "error" in a2 else _ci(a2, "a", ci=ci2 if "a" in ci2 else {})
        a2_b = "–" if "error" in a2 else _ci(a2, "b", ci=ci2 if "b" in ci2 else {})
        rows.append(f"| {arm.name} | {f['runs']} | {f['isoflop_sets']} | {_ci(f, 'E')} | {_ci(f, 'alpha')} | "
                    f"{_ci(f, 'beta')} | {_ci(f, 'a')} | {a2_a} | {_ci(f, 'b')} | {a2_b} |")
    lost = [f"{arm.name} {arm.fit['ci_used']} of {arm.fit['bootstrap']}" for arm in arms
            if arm.fit.get("ci_used", arm.fit.get("bootstrap")) != arm.fit.get("bootstrap")]
    if lost:  # the rest ran off to infinity: a sign the runs pin a term only loosely
        rows += ["", "Approach-3 bootstrap fits that converged: " + "; ".join(lost)
                 + " (the rest ran a coefficient off to infinity and are left out of the intervals)."]
    return rows


def minima_table(arms: Sequence[Arm]) -> list[str]:
    rows = ["| arm | budget C | runs | best run: N, loss | approach 2: N_opt, D_opt, loss at the minimum |",
            "|---|---|---|---|---|"]
    for arm in arms:
        minima = {round(np.log(m["compute"]), 6): m for m in arm.fit["approach2"]["minima"]}
        skipped = {round(np.log(s["compute"]), 6): s["reason"] for s in arm.fit["approach2"]["skipped"]}
        for c, g in _budgets(arm):
            b = g[np.argmin(arm.sweep.L[g])]
            key = round(float(np.log(arm.sweep.C[g]).mean()), 6)  # approach 2 labels a set by its mean compute
            m = minima.get(key)
            a2 = (f"{_g(m['n_opt'])}, {_g(m['d_opt'])}, {m['loss_min']:.4f}" if m else
                  f"none: {skipped.get(key, 'not fitted')}")
            rows.append(f"| {arm.name} | {_g(c)} | {g.size} | {_g(arm.sweep.N[b])}, {arm.sweep.L[b]:.4f} | {a2} |")
    return rows


def metrics_table(arms: Sequence[Arm], name: str) -> list[str]:
    budgets: list[float] = []
    for c in sorted(c for arm in arms for c, _ in _budgets(arm)):
        if not budgets or c > budgets[-1] * 1.05:
            budgets.append(c)
    rows = ["| budget C | " + " | ".join(f"{a.name}: best / mean" for a in arms) + " |",
            "|---|" + "---|" * len(arms)]
    for c in budgets:
        cells = []
        for arm in arms:
            values = arm.metric(name)
            match = [g for cb, g in _budgets(arm) if abs(np.log(cb / c)) < 0.05]
            v = values[match[0]] if match else np.array([])
            v = v[~np.isnan(v)]
            cells.append(f"{v.max():.3f} / {v.mean():.3f}" if v.size else "–")
        rows.append(f"| {_g(c)} | " + " | ".join(cells) + " |")
    gammas = []
    for arm in arms:
        law = arm.fit.get("metrics", {}).get(name)
        if law and "error" not in law:
            gammas.append(f"{arm.name}: {law['k']:.3g} C^{law['gamma']:.4f} (R^2 {law['r2']:.2f})")
    if gammas:
        rows += ["", "Power law through the best value per budget: " + "; ".join(gammas) + "."]
    return rows


def runs_table(arms: Sequence[Arm]) -> list[str]:
    metrics = metric_names(arms)
    rows = ["| arm | run | N | tokens | C | loss | " + " | ".join(metrics) + " |",
            "|---|---|---|---|---|---|" + "---|" * len(metrics)]
    for arm in arms:
        columns = {m: arm.metric(m) for m in metrics}
        for i in np.argsort(arm.sweep.C, kind="stable"):
            cells = [("–" if np.isnan(columns[m][i]) else f"{columns[m][i]:.3f}") for m in metrics]
            rows.append(f"| {arm.name} | {arm.sweep.runs[i]} | {_g(arm.sweep.N[i])} | {_g(arm.sweep.D[i])} | "
                        f"{_g(arm.sweep.C[i])} | {arm.sweep.L[i]:.4f} | " + " | ".join(cells) + " |")
    return rows


def write_report(arms: Sequence[Arm], out: str | Path, title: str = "Scaling report",
                 notes: str = "") -> list[Path]:
    """REPORT.md (`out`) and its figures in the same directory; returns the figure paths."""
    if not arms:
        raise ResultsError("give at least one --arm NAME=DIR")
    out = Path(out)
    figdir = out.parent
    figures = [figdir / "arms_frontier.png"]
    plot_arms_frontier(arms, figures[0])
    metrics = metric_names(arms)
    for m in metrics:
        figures.append(figdir / f"arms_{_slug(m)}.png")
        plot_arms_metric(arms, m, figures[-1])
    copied: dict[str, list[Path]] = {}
    for arm in arms:
        for name in ARM_PLOTS:
            src = arm.directory / "plots" / name
            if src.is_file():
                dst = figdir / f"{_slug(arm.name)}_{name}"
                shutil.copyfile(src, dst)
                copied.setdefault(arm.name, []).append(dst)
    loss = arms[0].fit.get("loss_column", "loss")
    lines = [f"# {title}", ""]
    if notes.strip():
        lines += [notes.strip(), ""]
    lines += ["## Fits", "",
              f"Approach 3: L(N, D) = E + A/N^alpha + B/D^beta fitted to the final validation `{loss}` of every run "
              "(Huber on log residuals); a = beta/(alpha+beta) and b = alpha/(alpha+beta) are the exponents of the "
              "compute-optimal N_opt ∝ C^a and D_opt ∝ C^b. Approach 2: a parabola in log N per isoFLOP set, its "
              "minima fitted as power laws in C. Brackets: 95% bootstrap intervals (approach 3: runs resampled; "
              "approach 2: residuals resampled within each set).", "",
              *fits_table(arms), "", f"![loss vs compute]({figures[0].name})", "",
              "## isoFLOP minima", "", *minima_table(arms), ""]
    for arm in arms:
        imgs = " ".join(f"![{arm.name}: {p.stem}]({p.name})" for p in copied.get(arm.name, []))
        if imgs:
            lines += [f"**{arm.name}**", "", imgs, ""]
    if metrics:
        lines += ["## Benchmarks vs compute", ""]
        for m, fig in zip(metrics, figures[1:]):
            lines += [f"### {m}", "", *metrics_table(arms, m), "", f"![{m} vs compute]({fig.name})", ""]
    lines += ["## Every run", "", "<details><summary>table</summary>", "", *runs_table(arms), "", "</details>", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    return figures + [p for ps in copied.values() for p in ps]
