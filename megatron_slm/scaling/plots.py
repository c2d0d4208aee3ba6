"""Scaling plots (PNG, matplotlib Agg): isoFLOP curves, loss-compute frontier, allocation, metrics.

All plots take the sweep (`analysis.Sweep`), the fit report (`analysis.analyse`) and the
reference laws to draw for comparison (`fit.REFERENCE_LAWS`).
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from megatron_slm.scaling.analysis import Sweep, law_from_report  # noqa: E402
from megatron_slm.scaling.fit import LossLaw  # noqa: E402

_COMPARE_STYLE = {"textless": ("C0", ":"), "chinchilla": ("C2", "-.")}


def _style(name: str) -> dict:
    color, ls = _COMPARE_STYLE.get(name, ("C4", "--"))
    return {"color": color, "linestyle": ls, "lw": 1.8}


def _compute_axis(sweep: Sweep, extend: float = 10.0) -> np.ndarray:
    return np.geomspace(sweep.C.min() / 2, sweep.C.max() * extend, 200)


def _budget_colors(budgets: np.ndarray):
    """A log-compute colour scale and its colour bar mapping: one colour per budget, readable
    with any number of budgets (a legend entry per budget is not)."""
    from matplotlib.colors import LogNorm

    lo, hi = float(budgets.min()), float(budgets.max())
    if hi <= lo * 1.0001:  # one budget: a colour bar still needs a range
        lo, hi = lo / 1.5, hi * 1.5
    mappable = plt.cm.ScalarMappable(norm=LogNorm(lo, hi), cmap=plt.cm.viridis)
    return mappable, [mappable.to_rgba(c) for c in budgets]


def plot_isoflop(sweep: Sweep, report: dict, path: Path) -> None:
    law = law_from_report(report)
    minima = {round(np.log(m["compute"]), 6): m for m in report["approach2"]["minima"]}
    fig, ax = plt.subplots(figsize=(7.5, 5))
    budgets = np.array([float(np.exp(np.log(sweep.C[g]).mean())) for g in sweep.groups])
    mappable, colors = _budget_colors(budgets)
    for g, c, color in zip(sweep.groups, budgets, colors):
        ax.scatter(sweep.N[g], sweep.L[g], color=color, s=22, zorder=3)
        n_axis = np.geomspace(sweep.N[g].min(), sweep.N[g].max(), 100)
        ax.plot(n_axis, law.loss(n_axis, c / (6 * n_axis)), "--", color=color, lw=1, alpha=0.8)
        m = minima.get(round(np.log(c), 6))
        if m is not None:
            c2, c1, c0 = m["coeffs"]
            x = np.log(n_axis)
            ax.plot(n_axis, c2 * x * x + c1 * x + c0, "-", color=color, lw=1.5)
            ax.scatter([m["n_opt"]], [m["loss_min"]], marker="*", s=160, color=color, edgecolor="k", zorder=4)
    ax.set_xscale("log")
    ax.set_xlabel(f"model size N ({report['params_column']})")
    ax.set_ylabel(f"final validation {report['loss_column']}")
    ax.set_title("isoFLOP curves: parabola (solid) with its minimum (*), approach-3 law (dashed)", fontsize=9)
    bar = fig.colorbar(mappable, ax=ax, pad=0.02)
    bar.set_label("compute budget C (FLOPs)")
    if len(budgets) <= 10:  # label the budgets that were run; with more, the scale's own ticks read better
        bar.set_ticks(budgets, labels=[f"{c:.2g}" for c in budgets])
        bar.ax.minorticks_off()
    ax.grid(True, which="both", alpha=0.3)
    save_figure(fig, path)


def plot_frontier(sweep: Sweep, report: dict, compare: Mapping[str, LossLaw], path: Path) -> None:
    law = law_from_report(report)
    c_axis = _compute_axis(sweep)
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.scatter(sweep.C, sweep.L, s=14, color="0.6", label="runs")
    best = [g[np.argmin(sweep.L[g])] for g in sweep.groups]
    ax.scatter(sweep.C[best], sweep.L[best], s=36, color="k", zorder=3, label="best run per budget")
    ax.plot(c_axis, law.optimal(c_axis)[2], "C3-", lw=2,
            label=f"fit: L_opt(C), E={law.E:.3g}, alpha={law.alpha:.3f}, beta={law.beta:.3f}")
    for name, ref in compare.items():
        ax.plot(c_axis, ref.optimal(c_axis)[2], label=f"{name}: L_opt(C)", **_style(name))
    ax.set_xscale("log")
    ax.set_xlabel("training compute C = 6ND (FLOPs)")
    ax.set_ylabel(f"final validation {report['loss_column']}")
    ax.set_title("loss-compute frontier")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    save_figure(fig, path)


def plot_allocation(sweep: Sweep, report: dict, compare: Mapping[str, LossLaw], path: Path) -> None:
    law = law_from_report(report)
    c_axis = _compute_axis(sweep)
    a2 = report["approach2"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    n3, d3, _ = law.optimal(c_axis)
    for ax, what, y3, key, exp_key in ((axes[0], "N_opt", n3, "n_opt", "a"), (axes[1], "D_opt", d3, "d_opt", "b")):
        if math.isfinite(law.G):  # a flat term gives no allocation to draw
            ax.plot(c_axis, y3, "C3-", lw=2, label=f"approach 3: {exp_key} = {report[exp_key]:.3f}")
        if a2["minima"]:
            cs = np.array([m["compute"] for m in a2["minima"]])
            ax.scatter(cs, [m[key] for m in a2["minima"]], color="k", zorder=3, label="isoFLOP minima")
            if "error" not in a2:  # D_opt = (C/6) / N_opt
                n2 = a2["G"] * (c_axis / 6) ** a2["a"]
                y2 = n2 if what == "N_opt" else (c_axis / 6) / n2
                ax.plot(c_axis, y2, "k--", lw=1, label=f"approach 2: {exp_key} = {a2[exp_key]:.3f}")
        for name, ref in compare.items():
            y = ref.optimal(c_axis)[0 if what == "N_opt" else 1]
            ax.plot(c_axis, y, label=f"{name}: {exp_key} = {getattr(ref, exp_key):.3f}", **_style(name))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training compute C (FLOPs)")
        ax.set_ylabel(f"{what} ({'parameters' if what == 'N_opt' else 'tokens'})")
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle("compute-optimal allocation")
    save_figure(fig, path)


def plot_metric(sweep: Sweep, name: str, values: np.ndarray, law: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ok = ~np.isnan(values)
    ax.scatter(sweep.C[ok], values[ok], s=14, color="0.6", label="runs")
    if "error" not in law:
        ax.scatter(law["compute"], law["best"], s=36, color="k", zorder=3, label="best per budget")
        c_axis = _compute_axis(sweep)
        ax.plot(c_axis, law["k"] * c_axis ** law["gamma"], "C3-",
                label=f"{law['k']:.3g} C^{law['gamma']:.4f} (R^2 {law['r2']:.2f})")
    ax.set_xscale("log")
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel(name)
    ax.set_title(f"{name} vs compute")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    save_figure(fig, path)


def save_figure(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_all(sweep: Sweep, report: dict, compare: Mapping[str, LossLaw], out: str | Path,
             metric_values: Mapping[str, np.ndarray] = {}) -> list[Path]:
    out = Path(out)
    paths = [out / "isoflop.png", out / "frontier.png", out / "allocation.png"]
    plot_isoflop(sweep, report, paths[0])
    plot_frontier(sweep, report, compare, paths[1])
    plot_allocation(sweep, report, compare, paths[2])
    for name, values in metric_values.items():
        law = report["metrics"].get(name)
        if law is None:
            continue
        path = out / f"metric_{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png"
        plot_metric(sweep, name, values, law, path)
        paths.append(path)
    return paths
