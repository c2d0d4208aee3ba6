"""Scaling-law fits: Chinchilla approaches 3 and 2, metric-vs-compute power laws.

Approach 3 (Hoffmann et al. 2022, as in SIMS and Cuervo & Marxer 2024):

    L(N, D) = E + A / N^alpha + B / D^beta

fitted in log space, log L = LSE(a - alpha log N, b - beta log D, e) with A = e^a, B = e^b,
E = e^e, by minimising the sum of Huber losses (delta = 1e-3) of the log-loss residuals with
L-BFGS. The objective and its analytic gradient are vectorised; it is evaluated once over a
grid of initialisations (the Chinchilla grid) and L-BFGS runs from the best few of them, so
a fit takes milliseconds and a 1000-sample bootstrap seconds.

Under C = 6 N D the loss-optimal allocation is N_opt = G (C/6)^a, D_opt = (C/6)^b / G with
a = beta/(alpha+beta), b = alpha/(alpha+beta), G = (alpha A / (beta B))^(1/(alpha+beta)).

Approach 2: per isoFLOP set a parabola of loss in log N gives the optimal size at that
budget; power laws of those optima in C give a and b directly.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import sys
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

HUBER_DELTA = 1e-3
# Chinchilla's grid of initialisations for (e, a, b, alpha, beta).
INIT_GRID = (
    np.arange(-1.0, 1.01, 0.5),     # e = log E
    np.arange(0.0, 25.1, 5.0),      # a = log A
    np.arange(0.0, 25.1, 5.0),      # b = log B
    np.arange(0.0, 2.01, 0.5),      # alpha
    np.arange(0.0, 2.01, 0.5),      # beta
)


@dataclass(frozen=True)
class LossLaw:
    """L(N, D) = E + A/N^alpha + B/D^beta with its compute-optimal allocation."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def loss(self, N, D):
        N, D = np.asarray(N, float), np.asarray(D, float)
        return self.E + self.A / N ** self.alpha + self.B / D ** self.beta

    @property
    def a(self) -> float:
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    @property
    def G(self) -> float:
        """NaN when a term is flat (alpha A or beta B is 0): the loss then does not trade N against
        D and there is no compute-optimal allocation (a fit to runs that barely trained)."""
        num, den = self.alpha * self.A, self.beta * self.B
        if not (num > 0 and den > 0):
            return math.nan
        return (num / den) ** (1.0 / (self.alpha + self.beta))

    def optimal(self, C):
        """(N_opt, D_opt, L_opt) for compute C (FLOPs, C = 6ND); arrays broadcast."""
        c6 = np.asarray(C, float) / 6.0
        n = self.G * c6 ** self.a
        d = c6 ** self.b / self.G
        return n, d, self.loss(n, d)

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "a": self.a, "b": self.b, "G": self.G}


# Published coefficients to compare against: Chinchilla (Hoffmann et al. 2022) and textless SLMs (Cuervo & Marxer 2024).
REFERENCE_LAWS: dict[str, LossLaw] = {
    "textless": LossLaw(E=1.73, A=13.9, B=39.8, alpha=0.25, beta=0.24),  # Cuervo & Marxer 2024
    "chinchilla": LossLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28),  # Hoffmann 2022
}


# --------------------------------------------------------------------------- approach 3


def _predict_log(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray):
    """log L-hat for parameter rows theta [k, 5] at points [n] -> ([k, n], softmax weights [3, k, n])."""
    e, a, b, alpha, beta = (theta[:, j:j + 1] for j in range(5))
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.broadcast_to(e, (theta.shape[0], log_n.size))])
    top = terms.max(axis=0)
    ex = np.exp(terms - top)
    total = ex.sum(axis=0)
    return top + np.log(total), ex / total


def _huber(r: np.ndarray, delta: float):
    small = np.abs(r) <= delta
    value = np.where(small, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta))
    slope = np.where(small, r, delta * np.sign(r))
    return value, slope


def objective(theta: np.ndarray, log_n, log_d, log_l, delta: float = HUBER_DELTA):
    """Sum of Huber(log L-hat - log L) for each row of theta [k, 5]; returns (values [k], grads [k, 5])."""
    pred, w = _predict_log(theta, log_n, log_d)
    value, slope = _huber(pred - log_l, delta)
    grad = np.stack([
        (slope * w[2]).sum(1),
        (slope * w[0]).sum(1),
        (slope * w[1]).sum(1),
        -(slope * w[0] * log_n).sum(1),
        -(slope * w[1] * log_d).sum(1),
    ], axis=1)
    return value.sum(1), grad


_GRID = np.array(list(itertools.product(*INIT_GRID)))


def _single_objective(theta: np.ndarray, log_n, log_d, log_l, delta: float):
    """`objective` for one parameter vector, without the batching overhead (L-BFGS inner loop)."""
    e, a, b, alpha, beta = theta
    t0 = a - alpha * log_n
    t1 = b - beta * log_d
    top = np.maximum(np.maximum(t0, t1), e)
    x0, x1, x2 = np.exp(t0 - top), np.exp(t1 - top), np.exp(e - top)
    total = x0 + x1 + x2
    r = top + np.log(total) - log_l
    ar = np.abs(r)
    small = ar <= delta
    value = np.where(small, 0.5 * r * r, delta * (ar - 0.5 * delta)).sum()
    slope = np.where(small, r, delta * np.sign(r)) / total
    s0, s1 = slope * x0, slope * x1
    grad = np.array([(slope * x2).sum(), s0.sum(), s1.sum(), -(s0 @ log_n), -(s1 @ log_d)])
    return value, grad


def _lbfgs(theta0: np.ndarray, args) -> tuple[np.ndarray, float]:
    # The objective is small (residuals ~1e-2 times delta 1e-3), so scale it to O(1) for
    # the stopping rules; too-loose tolerances stop L-BFGS early (Besiroglu et al. 2024).
    scale = 1.0 / (args[3] * max(args[0].size, 1))

    def f(t):
        v, g = _single_objective(t, *args)
        return v * scale, g * scale

    from scipy.optimize import minimize

    res = minimize(f, theta0, jac=True, method="L-BFGS-B",
                   options={"maxiter": 5000, "ftol": 1e-14, "gtol": 1e-10, "maxcor": 20})
    return res.x, res.fun / scale


def fit_loss_law(N, D, L, starts: int = 8, extra_starts: Sequence[np.ndarray] = (),
                 delta: float = HUBER_DELTA) -> tuple[LossLaw, float]:
    """Approach 3: returns (law, final objective). N, D, L: positive arrays of equal length.

    L-BFGS runs from the `starts` best grid points plus `extra_starts` (log-space thetas).
    """
    # A 5-parameter L-BFGS gains nothing from BLAS threads, and their spinning costs 10-50x
    # wall time on a busy machine.
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _fit(N, D, L, starts, extra_starts, delta)


def _fit(N, D, L, starts: int, extra_starts: Sequence[np.ndarray], delta: float) -> tuple[LossLaw, float]:
    log_n, log_d, log_l = (np.log(np.asarray(x, float)) for x in (N, D, L))
    args = (log_n, log_d, log_l, delta)
    inits = [np.asarray(t, float) for t in extra_starts]
    if starts > 0:
        # alpha = beta = 0 starts have a zero gradient in the exponents: skip degenerate ones.
        grid = _GRID[(_GRID[:, 3] > 0) & (_GRID[:, 4] > 0)]
        grid_values, _ = objective(grid, *args)
        inits = [grid[i] for i in np.argsort(grid_values, kind="stable")[:starts]] + inits
    if not inits:
        raise ValueError("fit_loss_law: no initialisation (starts=0 and no extra_starts)")
    best_theta, best_value = None, math.inf
    for theta0 in inits:
        theta, value = _lbfgs(theta0, args)
        # a coefficient past e^709 is a run-off, not a fit (runs too few to pin a term)
        if value < best_value and np.all(np.isfinite(theta)) and np.all(theta[:3] < _LOG_MAX):
            best_theta, best_value = theta, value
    if best_theta is None:
        raise FitError(f"approach 3 diverged from all {len(inits)} starts (a coefficient ran off to infinity)")
    e, a, b, alpha, beta = best_theta
    return LossLaw(E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=float(alpha), beta=float(beta)), best_value


class FitError(ValueError):
    """A fit that has no finite optimum on these runs."""


_LOG_MAX = math.log(sys.float_info.max)
# ln of the smallest normal float: a fit whose floor E ran off to exp(-745) and underflowed to 0
# (runs that show no loss floor at all) still has a finite log-space theta to warm-start from.
_LOG_ZERO = math.log(sys.float_info.min)


def law_theta(law: LossLaw) -> np.ndarray:
    return np.array([math.log(x) if x > 0 else _LOG_ZERO for x in (law.E, law.A, law.B)] + [law.alpha, law.beta])


def bootstrap_loss_law(N, D, L, samples: int, seed: int = 0, level: float = 0.95,
                       progress: bool = False, starts: int = 0, center: Optional[LossLaw] = None) -> tuple[dict, int]:
    """(percentile CIs of E, A, B, alpha, beta, a, b, G, resamples used) from fits to resampled runs.

    A resample whose fit runs off to infinity (with few runs, some resamples repeat too few
    sizes to pin a term) is left out and not counted in `used`.

    Each resample is fitted from the full-data optimum (`center`) plus the best `starts`
    grid points: resamples stay in the full fit's basin, and a warm start costs a tenth of
    a grid search, so 1000 samples take seconds.
    """
    from tqdm import tqdm

    N, D, L = (np.asarray(x, float) for x in (N, D, L))
    rng = np.random.default_rng(seed)
    center = center or fit_loss_law(N, D, L)[0]
    keys = ("E", "A", "B", "alpha", "beta", "a", "b", "G")
    draws = {k: [] for k in keys}
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        for _ in tqdm(range(samples), desc="bootstrap", unit="fit", disable=not progress):
            idx = rng.integers(0, N.size, N.size)
            try:
                law, _ = _fit(N[idx], D[idx], L[idx], starts, [law_theta(center)], HUBER_DELTA)
            except FitError:
                continue
            for k, v in law.as_dict().items():
                draws[k].append(v)
    used = len(draws["E"])
    if used == 0:
        raise FitError(f"bootstrap: all {samples} resampled fits diverged")
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    return {k: [float(x) for x in np.percentile(draws[k], q)] for k in keys}, used


# --------------------------------------------------------------------------- approach 2


@dataclass(frozen=True)
class IsoflopMinimum:
    compute: float  # geometric mean of the set's compute
    n_opt: float
    d_opt: float
    loss_min: float  # parabola value at its minimum
    coeffs: tuple[float, float, float]  # loss = c2 x^2 + c1 x + c0, x = ln N
    runs: int


def isoflop_minimum(N, L, compute) -> tuple[Optional[IsoflopMinimum], str]:
    """Parabola of loss in ln N for one isoFLOP set; (None, reason) when it has no usable minimum."""
    x, L, compute = np.log(np.asarray(N, float)), np.asarray(L, float), np.asarray(compute, float)
    if np.unique(x).size < 3:
        return None, f"{np.unique(x).size} distinct model sizes (a parabola needs 3)"
    c2, c1, c0 = np.polyfit(x, L, 2)
    if c2 <= 0:
        return None, "loss is not convex in log N (no minimum)"
    x_opt = -c1 / (2 * c2)
    if not x.min() <= x_opt <= x.max():
        return None, (f"minimum N={math.exp(x_opt):.3g} lies outside the sampled sizes "
                      f"[{math.exp(x.min()):.3g}, {math.exp(x.max()):.3g}]")
    c = float(np.exp(np.log(compute).mean()))
    n_opt = float(np.exp(x_opt))
    return IsoflopMinimum(compute=c, n_opt=n_opt, d_opt=c / (6 * n_opt),
                          loss_min=float(c0 - c1 * c1 / (4 * c2)), coeffs=(float(c2), float(c1), float(c0)),
                          runs=int(x.size)), ""


@dataclass(frozen=True)
class PowerLaw:
    """y = k * x^gamma, fitted by least squares in log-log space."""

    k: float
    gamma: float
    r2: float
    points: int

    def __call__(self, x):
        return self.k * np.asarray(x, float) ** self.gamma


def fit_power_law(x, y) -> PowerLaw:
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    gamma, logk = np.polyfit(lx, ly, 1)
    resid = ly - (gamma * lx + logk)
    ss = ((ly - ly.mean()) ** 2).sum()
    r2 = 1.0 - (resid ** 2).sum() / ss if ss > 0 else 1.0
    return PowerLaw(k=float(math.exp(logk)), gamma=float(gamma), r2=float(r2), points=int(lx.size))


def approach2(N, L, compute, groups: list[np.ndarray]) -> dict:
    """Allocation exponents from per-set parabola minima: N_opt = G (C/6)^a, D_opt = (C/6)^b / G."""
    N, L, compute = (np.asarray(v, float) for v in (N, L, compute))
    minima, skipped = [], []
    for g in groups:
        m, why = isoflop_minimum(N[g], L[g], compute[g])
        if m is None:
            skipped.append({"compute": float(np.exp(np.log(compute[g]).mean())), "runs": int(g.size), "reason": why})
        else:
            minima.append(m)
    out: dict = {"minima": [dataclasses.asdict(m) for m in minima], "skipped": skipped}
    if len(minima) < 2:
        out["error"] = f"{len(minima)} isoFLOP set(s) with a minimum; approach 2 needs at least 2"
        return out
    c6 = np.array([m.compute for m in minima]) / 6
    n_law = fit_power_law(c6, [m.n_opt for m in minima])
    d_law = fit_power_law(c6, [m.d_opt for m in minima])
    out.update(a=n_law.gamma, b=d_law.gamma, G=n_law.k, r2_n=n_law.r2, r2_d=d_law.r2)
    return out


def bootstrap_approach2(N, L, compute, groups: list[np.ndarray], samples: int, seed: int = 0,
                        level: float = 0.95) -> dict:
    """Percentile CIs of approach 2's a and b by a residual bootstrap: a set's sizes are the
    plan's (fixed design), so each sample keeps them and redraws the losses as the set's parabola
    plus its residuals resampled with replacement (scaled by sqrt(n / (n - 3)) for the three
    fitted coefficients). A sample whose minima no longer give 2 sets is not counted (`used`)."""
    N, L, compute = (np.asarray(v, float) for v in (N, L, compute))
    fits = []
    for g in groups:
        x = np.log(N[g])
        if np.unique(x).size < 3:
            fits.append(None)
            continue
        fitted = np.polyval(np.polyfit(x, L[g], 2), x)
        resid = (L[g] - fitted) * math.sqrt(g.size / max(g.size - 3, 1))
        fits.append((fitted, resid))
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(samples):
        Lb = L.copy()
        for g, fit in zip(groups, fits):
            if fit is not None:
                Lb[g] = fit[0] + rng.choice(fit[1], size=g.size, replace=True)
        out = approach2(N, Lb, compute, groups)
        if "error" not in out:
            draws.append(out["a"])
    if not draws:
        return {"error": f"no bootstrap sample had 2 isoFLOP sets with a minimum ({samples} drawn)"}
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    a_lo, a_hi = (float(x) for x in np.percentile(draws, q))
    return {"a": [a_lo, a_hi], "b": [1.0 - a_hi, 1.0 - a_lo], "used": len(draws), "samples": samples}


# --------------------------------------------------------------------------- synthetic sweeps


def simulate_sweep(law: LossLaw, budgets: Sequence[float], sizes_per_budget: int = 9, span: float = 8.0,
                   noise: float = 0.01, seed: int = 0) -> dict[str, np.ndarray]:
    """An isoFLOP sweep drawn from `law`: per budget, sizes log-uniform in [N_opt/span, N_opt*span].

    Loss gets multiplicative log-normal noise exp(noise * eps). Use it to check that a planned
    sweep can resolve the exponents before spending the compute (and in tests).
    """
    rng = np.random.default_rng(seed)
    cols: dict[str, list] = {"params": [], "tokens": [], "compute": [], "loss": [], "budget": []}
    for c in budgets:
        n_opt = law.optimal(c)[0]
        for n in n_opt * np.geomspace(1 / span, span, sizes_per_budget):
            d = c / (6 * n)
            cols["params"].append(n)
            cols["tokens"].append(d)
            cols["compute"].append(c)
            cols["budget"].append(c)
            cols["loss"].append(float(law.loss(n, d)) * math.exp(noise * rng.standard_normal()))
    return {k: np.array(v) for k, v in cols.items()}
