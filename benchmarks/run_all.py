"""Runs every benchmark script and writes one JSON and one Markdown report.

Run: python benchmarks/run_all.py [--quick] [--out DIR] [--only NAME] [--compare OLD.json]

Every ``bench_*.py`` in the benchmarks directory (``--dir`` to look elsewhere) runs in its own
interpreter as ``python bench_X.py --json <temp file> [--quick]``, one after another (they time
things: never two at once), with the checkout's packages on ``PYTHONPATH``. Their printed
reports go to ``DIR/logs/<name>.stdout.txt`` / ``.stderr.txt``. The runner then writes

- ``DIR/benchmarks.json``: ``{"date", "git", "machine", "quick", "benchmarks": {name: {"status",
  "returncode", "wall_s", "command", "result" (the script's JSON), "stderr_tail"}}}``;
- ``DIR/benchmarks.md``: a summary table, then per benchmark a table of simad beside MuJoCo and
  Pinocchio (where the script measured them) and every figure as a key / value row (nested
  dicts flattened to dotted keys, list items labelled by their ``n``, ``B``, ``clients``, ...).

A script that fails (non-zero exit, no JSON, time-out) is reported as failed with the tail of
its stderr; the others still run and the runner exits 1 at the end. ``--only kinematics``
(repeatable, or comma-separated) runs a subset. ``--compare OLD.json`` prints new / old for every
numeric figure found under the same key in both runs (and adds the table to the Markdown);
``--compare OLD.json --against NEW.json`` compares two saved runs without running anything.
The default DIR is ``bench-results/`` at the repository root.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from importlib import metadata

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SRC_PATHS = [ROOT, os.path.join(ROOT, "server"), os.path.join(ROOT, "clients", "python")]

ENGINES = ("simad", "mujoco", "pinocchio")
ENGINE_TITLES = {"simad": "simad", "mujoco": "MuJoCo", "pinocchio": "Pinocchio"}
# fields that identify an item of a list of dicts (its row label), in this order
ID_KEYS = ("name", "model", "n", "B", "T", "clients", "horizon")
# top-level sections that describe the run, not a measurement: never compared
NOT_FIGURES = ("machine", "server_info", "targets", "quick")
STDERR_TAIL_LINES = 25
# keys whose figures are rates although their names do not say so (full match)
RATE_KEYS = {"dynamics": re.compile(r"forward\[[^\]]*\]\.(simad|mujoco|pinocchio\w*)")}  # env-steps per second

# Figures that the key-name rule in engine_rows() cannot pair: label, simad's key, the others.
COMPARISONS = {
    "kinematics": [
        (f"FK + Jacobian, configurations/s, simad B = {B:,} (Pinocchio: 1 thread)", f"simad_configs_per_s.{B}",
         {"pinocchio": "pinocchio_configs_per_s"}) for B in (1, 1000, 100_000)
    ],
    "dynamics": [
        ("dL/du, all torques, B = 1 (MuJoCo: chained finite differences)", "gradient.simad_grad_s",
         {"pinocchio": "gradient.pinocchio_grad_s", "mujoco": "gradient.mujoco_fd_grad_s"}),
        ("linearize, time per point, batch (MuJoCo: forward differences)", "linearize.simad_batch_s_per_point",
         {"pinocchio": "linearize.pinocchio_s_per_point", "mujoco": "linearize.mujoco_fd_forward_s_per_point"}),
        ("linearize, one point (MuJoCo: forward differences)", "linearize.simad_single_s",
         {"pinocchio": "linearize.pinocchio_s_per_point", "mujoco": "linearize.mujoco_fd_forward_s_per_point"}),
    ],
}


# ---- discovery and running -------------------------------------------------------------------------

def discover(directory: str) -> dict[str, str]:
    """{name: path} of the ``bench_<name>.py`` scripts in directory, sorted by name."""
    paths = sorted(glob.glob(os.path.join(directory, "bench_*.py")))
    return {os.path.basename(p)[len("bench_"):-len(".py")]: p for p in paths}


def select(available: dict[str, str], only: list[str] | None) -> dict[str, str]:
    """The scripts named by --only (``kinematics`` or ``bench_kinematics[.py]``); all when None."""
    if not only:
        return dict(available)
    wanted = []
    for item in only:
        for name in item.split(","):
            name = name.strip()
            if name.endswith(".py"):
                name = name[:-3]
            if name.startswith("bench_"):
                name = name[len("bench_"):]
            if name:
                wanted.append(name)
    unknown = [n for n in wanted if n not in available]
    if unknown:
        raise SystemExit(f"run_all: unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(available) or 'none'}")
    return {n: available[n] for n in dict.fromkeys(wanted)}


def tail(text: str, lines: int = STDERR_TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def run_script(name: str, path: str, *, quick: bool, timeout: float, log_dir: str) -> dict:
    """Runs one script in a fresh interpreter; returns its record (status "ok" or "failed")."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(SRC_PATHS + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("PYTHONUNBUFFERED", "1")
    os.makedirs(log_dir, exist_ok=True)
    out_path = os.path.join(log_dir, f"{name}.stdout.txt")
    err_path = os.path.join(log_dir, f"{name}.stderr.txt")
    with tempfile.TemporaryDirectory(prefix="simad-bench-") as tmp:
        json_path = os.path.join(tmp, f"{name}.json")
        cmd = [sys.executable, path, "--json", json_path] + (["--quick"] if quick else [])
        shown = " ".join(["python", os.path.relpath(path, ROOT), "--json", "<file>"] + (["--quick"] if quick else []))
        record = {"status": "failed", "script": os.path.relpath(path, ROOT), "command": shown,
                  "returncode": None, "wall_s": None, "result": None, "error": "", "stderr_tail": ""}
        t0 = time.perf_counter()
        with open(out_path, "w") as out, open(err_path, "w") as err:
            try:
                proc = subprocess.run(cmd, stdout=out, stderr=err, cwd=ROOT, env=env, timeout=timeout,
                                      stdin=subprocess.DEVNULL)
                record["returncode"] = proc.returncode
            except subprocess.TimeoutExpired:
                record["error"] = f"timed out after {timeout:g} s"
        record["wall_s"] = time.perf_counter() - t0
        with open(err_path, errors="replace") as f:
            record["stderr_tail"] = tail(f.read())
        if record["returncode"] not in (None, 0):
            record["error"] = f"exit code {record['returncode']}"
        elif record["returncode"] == 0:
            try:
                with open(json_path) as f:
                    record["result"] = json.load(f)
            except FileNotFoundError:
                record["error"] = "exited 0 but wrote no JSON"
            except json.JSONDecodeError as e:
                record["error"] = f"wrote invalid JSON: {e}"
            else:
                record["status"] = "ok"
    return record


# ---- machine, git --------------------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    info = {"python": platform.python_version(), "implementation": platform.python_implementation(),
            "os": platform.platform(), "machine": platform.machine(), "cpu_model": _cpu_model(),
            "cpus": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()}
    if hasattr(os, "getloadavg"):
        info["loadavg_1min_at_start"] = os.getloadavg()[0]
    versions = {}
    for dist in ("numpy", "taichi", "grpcio", "protobuf", "mujoco", "pin"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    info["packages"] = versions
    return info


def git_info(root: str = ROOT) -> dict:
    def git(*args):
        out = subprocess.run(["git", "-C", root, *args], capture_output=True, text=True, timeout=30)
        return out.stdout.strip() if out.returncode == 0 else None

    try:
        commit = git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


# ---- flattening and formatting --------------------------------------------------------------------

def _is_scalar(v) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def _item_labels(items: list) -> list[str]:
    """Row labels of a list's items: ``[n=7,B=256]`` from identifying fields when unique, else ``[i]``."""
    labels = []
    for i, item in enumerate(items):
        parts = [f"{k}={item[k]}" for k in ID_KEYS if isinstance(item, dict) and _is_scalar(item.get(k)) and k in item]
        labels.append("[" + ",".join(parts) + "]" if parts else f"[{i}]")
    if len(set(labels)) != len(labels):
        labels = [f"[{i}]" for i in range(len(items))]
    return labels


def flatten(obj, prefix: str = "") -> list[tuple[str, object]]:
    """[(dotted key, scalar)] in document order; list items get ``[label]`` (see _item_labels).

    Identifying fields of a labelled item are not repeated as rows; an empty dict or list is one
    row with the value ``{}`` / ``[]``."""
    rows: list[tuple[str, object]] = []
    if isinstance(obj, dict):
        if not obj and prefix:
            return [(prefix, {})]
        for k, v in obj.items():
            rows.extend(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, (list, tuple)):
        if not obj and prefix:
            return [(prefix, [])]
        for label, item in zip(_item_labels(list(obj)), obj, strict=True):
            key = prefix + label
            if isinstance(item, dict) and not label[1:-1].isdigit():
                used = {part.split("=", 1)[0] for part in label[1:-1].split(",")}
                item = {k: v for k, v in item.items() if k not in used}
            rows.extend(flatten(item, key))
    else:
        rows.append((prefix, obj))
    return rows


def _last(key: str) -> str:
    """The key's last named part: ``a.b_s[0]`` -> ``b_s``, ``rates_per_s.1000`` -> ``rates_per_s``."""
    parts = [p.split("[", 1)[0] for p in key.split(".")]
    named = [p for p in parts if p and not p.lstrip("-").isdigit()]
    return named[-1] if named else parts[-1]


def is_time_key(key: str) -> bool:
    """Seconds: ``..._s``, ``p50_s``, ``..._s_per_point`` (not the rates ``..._per_s``)."""
    last = _last(key)
    return (last.endswith("_s") and not last.endswith("per_s")) or last.endswith("_s_per_point") or last == "s"


def is_rate_key(key: str, benchmark: str = "") -> bool:
    pattern = RATE_KEYS.get(benchmark)
    return _last(key).endswith("per_s") or bool(pattern and pattern.fullmatch(key))


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def fmt_seconds(s: float) -> str:
    a = abs(s)
    if a == 0 or not math.isfinite(s):
        return f"{s:g} s"
    if a >= 100:
        return f"{s:,.0f} s"
    if a >= 1:
        return f"{s:.3g} s"
    if a >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    if a >= 1e-6:
        return f"{s * 1e6:.3g} us"
    return f"{s * 1e9:.3g} ns"


def fmt_number(v: float) -> str:
    if isinstance(v, int):
        return f"{v:,}"
    if not math.isfinite(v):
        return str(v)
    a = abs(v)
    if a >= 1e9:
        return f"{v / 1e9:.3g} G"
    if a >= 1e6:
        return f"{v / 1e6:.3g} M"
    if a >= 1e4:
        return f"{v / 1e3:.3g} k"
    if a == 0 or a >= 1e-3:
        return f"{v:.4g}"
    return f"{v:.2e}"


def fmt_value(key: str, v, benchmark: str = "") -> str:
    """A readable cell: seconds in s / ms / us, rates with k / M, None as n/a, '|' escaped."""
    if v is None:
        text = "n/a"
    elif isinstance(v, bool):
        text = "yes" if v else "no"
    elif _number(v) and is_time_key(key):
        text = fmt_seconds(float(v))
    elif _number(v) and is_rate_key(key, benchmark):
        text = fmt_number(float(v)) + "/s"
    elif _number(v):
        text = fmt_number(v)
    elif isinstance(v, dict):
        text = "{}"
    elif isinstance(v, list):
        text = "[]"
    else:
        text = str(v)
    return text.replace("|", "\\|").replace("\n", " ")


def md_table(header: list[str], rows: list[list[str]], align: list[str] | None = None) -> str:
    align = align or ["l"] * len(header)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


# ---- simad beside the reference engines -----------------------------------------------------------

def _engine_split(key: str):
    """(figure key, engine) when the key's last part names exactly one engine as a ``_`` token."""
    head, sep, last = key.rpartition(".")
    tokens = last.split("_")
    found = [t for t in tokens if t in ENGINES]
    if len(found) != 1:
        return None
    rest = "_".join(t for t in tokens if t != found[0])
    figure = (head + sep + rest) if rest else head
    return (figure or last), found[0]


def engine_rows(name: str, flat: list[tuple[str, object]]) -> list[dict]:
    """Figures measured for simad and at least one reference engine:
    [{"figure", "key" (simad's, for the unit), "time" (bool), "simad", "mujoco", "pinocchio"}]
    (missing engines absent).

    The explicit COMPARISONS[name] first, then every group of keys that differ only by the
    engine's name (``forward[n=7,B=256].simad`` / ``.mujoco``, ``x.simad_time_s`` /
    ``x.pinocchio_time_s``)."""
    values = {k: v for k, v in flat if _number(v)}
    rows, used = [], set()
    for label, ours, others in COMPARISONS.get(name, []):
        if ours not in values:
            continue
        row = {"figure": label, "key": ours, "time": is_time_key(ours), "simad": values[ours]}
        for engine, key in others.items():
            if key in values:
                row[engine] = values[key]
        if len(row) > 4:
            rows.append(row)
            used.add(ours)
    groups: dict[str, dict] = {}
    for key, v in values.items():
        split = _engine_split(key)
        if split is None or key in used:
            continue
        figure, engine = split
        if not (_last(key) == engine or is_time_key(key) or is_rate_key(key, name)):
            continue  # not a cost or a speed (e.g. the loss each engine computed)
        groups.setdefault(figure, {"_keys": {}})["_keys"][engine] = key
        groups[figure][engine] = v
    for figure, g in groups.items():
        keys = g.pop("_keys")
        if "simad" in g and len(g) > 1:
            rows.append({"figure": figure, "key": keys["simad"], "time": is_time_key(keys["simad"]), **g})
    return rows


def _speed(row: dict, engine: str) -> str:
    """How many times faster simad is than engine (> 1: simad faster), from times or rates."""
    if engine not in row or not row["simad"] or not row[engine]:
        return ""
    ratio = row[engine] / row["simad"] if row["time"] else row["simad"] / row[engine]
    return f"{ratio:.3g}x"


def engine_table(rows: list[dict], benchmark: str = "") -> str:
    others = [e for e in ENGINES[1:] if any(e in r for r in rows)]
    header = ["figure"] + [ENGINE_TITLES[e] for e in ("simad", *others)] + [f"simad speed vs {ENGINE_TITLES[e]}" for e in others]
    body = []
    for r in rows:
        cells = [r["figure"].replace("|", "\\|")]
        cells += [fmt_value(r["key"], r[e], benchmark) if e in r else "" for e in ("simad", *others)]
        cells += [_speed(r, e) for e in others]
        body.append(cells)
    return md_table(header, body, ["l"] + ["r"] * (len(header) - 1))


# ---- comparing two runs ---------------------------------------------------------------------------

def numeric_figures(report: dict) -> dict[str, float]:
    """{"<benchmark>.<key>": value} for every numeric figure of the successful benchmarks."""
    out = {}
    for name, rec in report.get("benchmarks", {}).items():
        if rec.get("status") != "ok" or not isinstance(rec.get("result"), dict):
            continue
        result = {k: v for k, v in rec["result"].items() if k not in NOT_FIGURES}
        for key, v in flatten(result):
            if _number(v) and math.isfinite(v):
                out[f"{name}.{key}"] = float(v)
    return out


def compare(old: dict, new: dict) -> list[tuple[str, float, float, float | None]]:
    """[(key, old, new, new / old)] for the keys numeric in both reports (ratio None if old is 0)."""
    a, b = numeric_figures(old), numeric_figures(new)
    return [(k, a[k], v, (v / a[k]) if a[k] else None) for k, v in b.items() if k in a]


def compare_table(rows: list[tuple[str, float, float, float | None]]) -> str:
    body = []
    for k, o, n, r in rows:
        bench, _, key = k.partition(".")
        body.append([k.replace("|", "\\|"), fmt_value(key, o, bench), fmt_value(key, n, bench),
                     "n/a" if r is None else f"{r:.3g}"])
    return md_table(["figure", "old", "new", "new / old"], body, ["l", "r", "r", "r"])


# ---- the report -----------------------------------------------------------------------------------

def render_markdown(report: dict, comparison: list | None = None, compared_with: str | None = None) -> str:
    m, g = report.get("machine", {}), report.get("git", {})
    commit = (g.get("commit") or "unknown")[:12] + (" (uncommitted changes)" if g.get("dirty") else "")
    lines = ["# simad benchmarks", "",
             f"- date: {report.get('date', '?')}",
             f"- commit: {commit}",
             f"- machine: {m.get('cpu_model', '?')}, {m.get('usable_cpus', '?')} of {m.get('cpus', '?')} cpus usable, "
             f"{m.get('os', '?')}, Python {m.get('python', '?')}"
             + (f", load average {m['loadavg_1min_at_start']:.2f} at start" if "loadavg_1min_at_start" in m else ""),
             f"- packages: {', '.join(f'{k} {v}' for k, v in m.get('packages', {}).items()) or '?'}",
             f"- mode: {'--quick' if report.get('quick') else 'full'}; total wall time "
             f"{fmt_seconds(report.get('wall_s') or 0.0)}", ""]
    summary = []
    for name, rec in report.get("benchmarks", {}).items():
        status = "ok" if rec["status"] == "ok" else f"**failed** ({rec.get('error') or 'unknown'})"
        summary.append([name, status, fmt_seconds(rec["wall_s"]) if rec.get("wall_s") is not None else "",
                        f"`{rec.get('script', '')}`"])
    lines += [md_table(["benchmark", "status", "wall time", "script"], summary, ["l", "l", "r", "l"]), ""]
    for name, rec in report.get("benchmarks", {}).items():
        lines += [f"## {name}", "", f"`{rec.get('command', '')}`: "
                  + ("ok" if rec["status"] == "ok" else f"FAILED, {rec.get('error') or 'unknown'}")
                  + (f", {fmt_seconds(rec['wall_s'])}" if rec.get("wall_s") is not None else ""), ""]
        if rec["status"] != "ok":
            lines += ["stderr (tail):", "", "```", rec.get("stderr_tail") or "(empty)", "```", ""]
            continue
        result = rec["result"] if isinstance(rec["result"], dict) else {"result": rec["result"]}
        flat = flatten({k: v for k, v in result.items() if k != "machine"})
        rows = engine_rows(name, flat)
        if rows:
            lines += ["simad beside the reference engines (speed > 1x: simad faster):", "", engine_table(rows, name), ""]
        lines += ["All figures:", "",
                  md_table(["key", "value"], [[f"`{k}`", fmt_value(k, v, name)] for k, v in flat], ["l", "r"]), ""]
    if comparison is not None:
        lines += [f"## Compared with {compared_with or 'the previous run'}", "",
                  compare_table(comparison) if comparison else "No numeric figure in common.", ""]
    return "\n".join(lines)


def write_report(out_dir: str, report: dict, comparison=None, compared_with=None) -> tuple[str, str]:
    os.makedirs(out_dir, exist_ok=True)
    jpath, mpath = os.path.join(out_dir, "benchmarks.json"), os.path.join(out_dir, "benchmarks.md")
    with open(jpath, "w") as f:
        json.dump(report, f, indent=2, allow_nan=True)
    with open(mpath, "w") as f:
        f.write(render_markdown(report, comparison, compared_with))
    return jpath, mpath


def _load(path: str) -> dict:
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict) or "benchmarks" not in data:
        raise SystemExit(f"run_all: {path} is not a run_all report (no 'benchmarks' key)")
    return data


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="pass --quick to every script")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench-results"),
                    help="directory for benchmarks.json, benchmarks.md and logs/ (default: bench-results/)")
    ap.add_argument("--only", action="append", metavar="NAME",
                    help="run only this benchmark (kinematics or bench_kinematics); repeatable, or comma-separated")
    ap.add_argument("--dir", default=HERE, help="where to look for bench_*.py (default: this script's directory)")
    ap.add_argument("--compare", metavar="OLD.json", help="print new / old for every numeric figure with the same key")
    ap.add_argument("--against", metavar="NEW.json", help="with --compare: compare this saved report, run nothing")
    ap.add_argument("--timeout", type=float, default=7200.0, help="seconds per script before it counts as failed")
    args = ap.parse_args(argv)

    old = _load(args.compare) if args.compare else None
    if args.against:
        if old is None:
            ap.error("--against needs --compare")
        rows = compare(old, _load(args.against))
        print(compare_table(rows) if rows else "no numeric figure in common")
        return 0

    scripts = select(discover(args.dir), args.only)
    if not scripts:
        print(f"run_all: no bench_*.py in {args.dir}", file=sys.stderr)
        return 2
    report = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "git": git_info(),
              "machine": machine_info(), "quick": args.quick, "wall_s": None, "benchmarks": {}}
    t0 = time.perf_counter()
    log_dir = os.path.join(args.out, "logs")
    for i, (name, path) in enumerate(scripts.items(), 1):
        print(f"[{i}/{len(scripts)}] {name}: running {os.path.relpath(path, ROOT)}{' --quick' if args.quick else ''} ...",
              flush=True)
        rec = run_script(name, path, quick=args.quick, timeout=args.timeout, log_dir=log_dir)
        report["benchmarks"][name] = rec
        verdict = "ok" if rec["status"] == "ok" else f"FAILED ({rec['error']})"
        print(f"[{i}/{len(scripts)}] {name}: {verdict} in {rec['wall_s']:.1f} s", flush=True)
        if rec["status"] != "ok" and rec["stderr_tail"]:
            print("    " + tail(rec["stderr_tail"], 5).replace("\n", "\n    "), flush=True)
    report["wall_s"] = time.perf_counter() - t0
    comparison = compare(old, report) if old is not None else None
    jpath, mpath = write_report(args.out, report, comparison, args.compare)
    if comparison is not None:
        print(compare_table(comparison) if comparison else "no numeric figure in common with " + args.compare)
    failed = [n for n, r in report["benchmarks"].items() if r["status"] != "ok"]
    print(f"wrote {jpath} and {mpath}; logs in {log_dir}; total {report['wall_s']:.1f} s"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
