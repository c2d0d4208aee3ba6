"""The results as people read them: gpu_check.md (a section bench/RESULTS.md takes as is) and the
dry run's printed plan."""
from __future__ import annotations

from gpucheck.environment import describe_probe


def format_figures(fig: dict) -> str:
    parts = []
    for k, v in fig.items():
        if isinstance(v, float):
            v = f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        parts.append(f"{k} {v}")
    return ", ".join(parts)


def render_markdown(data: dict) -> str:
    dev = data.get("device") or "no CUDA device"
    lines = [
        "## GPU check (scripts/gpu_check.py)", "",
        f"`python scripts/gpu_check.py --wheelhouse wh/ --out gpu_check/` on {dev}"
        f"{' x' + str(data['device_count']) if data.get('device_count') else ''}, Python {data['python']}, "
        f"torch {data.get('torch') or '?'} (CUDA {data.get('cuda') or '-'}), megatron-core {data.get('megatron_core')} "
        f"(newest in the wheelhouse {data.get('megatron_core_newest')}); wheelhouse for CPython "
        f"{data['wheelhouse']['python']}, {data['wheelhouse']['wheels']} wheels, {data['wheelhouse']['mib']} MiB. "
        f"Started {data['started']}, {data['seconds']:.0f} s in all (budget {data['budget_s']:.0f} s).", "",
        "| step | status | time | figures | notes |", "|---|---|---|---|---|"]
    for s in data["steps"]:
        time_s = f"{s['seconds']:.0f} s / {s['limit_s']} s" if s["status"] not in ("skipped", "pending") else "–"
        note = s.get("reason") or s["details"].get("note") or ""
        lines.append(f"| {s['name']} ({s['title']}) | {s['status']} | {time_s} | "
                     f"{format_figures(s['figures']) or '–'} | {note.replace('|', '/')} |")
    for s in data["steps"]:
        d = s["details"]
        if d.get("not_run"):
            lines += ["", f"{s['name']}: tests that cannot run here, and why:"]
            lines += [f"- `{t['nodeid']}`: {t['reason']}" for t in d["not_run"]]
        if d.get("failed"):
            lines += ["", f"{s['name']}: failed tests:"]
            lines += [f"- `{t['nodeid']}`: {t.get('reason') or ''}"
                      + (f" ({t['baseline']})" if t.get("baseline") else "") for t in d["failed"]]
        if d.get("command"):
            lines += ["", f"{s['name']} command: `{d['command']}`"]
    return "\n".join(lines) + "\n"


def print_plan(plan: dict) -> None:
    w = plan["wheelhouse"]
    m = w["megatron_core"]
    print(f"wheelhouse {w['path']}: CPython {w['python']} on {', '.join(w['platforms'])}, {w['wheels']} wheels, "
          f"{w['mib']} MiB, sha256 ok")
    print(f"  megatron-core in it: {', '.join(m['versions']) or 'none'} (GPU steps use {m['baseline']}; our pin "
          f"resolves to {m['project']}; cpu-suite uses the newest, {m['newest']})")
    f = w["fit_here"]
    print(f"  fits this Python {f['python']}: {f['fit']} of {f['fit'] + len(f['unfit'])} wheels"
          + (f"; NOT {len(f['unfit'])}: {', '.join(f['unfit'][:4])}" + (", ..." if len(f["unfit"]) > 4 else "")
             if f["unfit"] else ""))
    print(f"  installs: {' '.join(w['install'])}")
    bad = [r for r in w["node_must_provide"] if not r["ok"]]
    print(f"  this environment must provide {len(w['node_must_provide'])} requirements itself: "
          + (", ".join(f"{r['requirement']} (has {r['installed'] or 'none'})" for r in bad) + " NOT met"
             if bad else "all met"))
    print(f"here: {describe_probe(plan['here'])}")
    print(f"plan for {plan['predicted_for']}; budget {plan['budget_s']:.0f} s, step limits of the steps that run "
          f"{plan['limits_total_s']} s")
    for i, s in enumerate(plan["steps"], 1):
        print(f"  {i}. {s['name']:10s} {s['limit_s']:4d} s  {s['status']:4s}  {s['title']}"
              + (f" -- {s['reason']}" if s.get("reason") else "") + (f" -- {s['note']}" if s.get("note") else ""))
        if s.get("command"):
            print(f"       {s['command']}")
        for t in s.get("not_run", []):
            print(f"       cannot run: {t['nodeid']}: {t['reason']}")
