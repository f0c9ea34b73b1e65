"""benchmarks/run_all.py: flattening, tables and comparisons on made-up figures, and one real run
of two tiny fake benchmark scripts (one writes its JSON, one fails) in a temporary directory."""

from __future__ import annotations

import importlib.util
import json
import os
import textwrap

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
RUNNER = os.path.join(os.path.dirname(HERE), "benchmarks", "run_all.py")


@pytest.fixture(scope="module")
def run_all():
    spec = importlib.util.spec_from_file_location("simad_bench_run_all", RUNNER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


DYNAMICS_LIKE = {
    "machine": {"cpus": 2},
    "quick": True,
    "forward": [{"n": 2, "B": 256, "simad": 2.0e6, "mujoco": 1.0e6, "pinocchio": 4.0e6,
                 "max_abs_diff_qT": {"mujoco": 1e-12}},
                {"n": 7, "B": 256, "simad": 6.0e5, "mujoco": 7.0e5}],
    "gradient": {"simad_grad_s": 0.0095, "pinocchio_grad_s": 0.019, "mujoco_fd_grad_s": 0.038, "T": 1000,
                 "simad_loss": 1.5, "pinocchio_loss": 1.5},
    "linearize": {"simad_batch_s_per_point": 5e-5, "pinocchio_s_per_point": 1.6e-5},
    "cold_empty_cache": None,
    "meets": {"forward": False},
    "labels": ["a", "b"],
    "empty": {},
}


def test_flatten_dotted_keys_and_labelled_list_items(run_all):
    flat = dict(run_all.flatten(DYNAMICS_LIKE))
    assert flat["forward[n=7,B=256].simad"] == 6.0e5
    assert flat["forward[n=2,B=256].max_abs_diff_qT.mujoco"] == 1e-12
    assert "forward[n=2,B=256].n" not in flat  # the label carries the identifying fields
    assert flat["gradient.simad_grad_s"] == 0.0095
    assert flat["cold_empty_cache"] is None
    assert flat["labels[0]"] == "a" and flat["labels[1]"] == "b"
    assert flat["empty"] == {}
    # items whose identifying fields collide fall back to their index
    dup = dict(run_all.flatten({"rows": [{"n": 1, "x": 1.0}, {"n": 1, "x": 2.0}]}))
    assert dup == {"rows[0].n": 1, "rows[0].x": 1.0, "rows[1].n": 1, "rows[1].x": 2.0}


def test_value_formatting(run_all):
    assert run_all.fmt_value("gradient.simad_grad_s", 0.0095) == "9.5 ms"
    assert run_all.fmt_value("x.p50_s", 4.6e-4) == "460 us"
    assert run_all.fmt_value("linearize.simad_batch_s_per_point", 5.2e-5) == "52 us"
    assert run_all.fmt_value("fk.calls_per_s", 1600.0) == "1600/s"
    assert run_all.fmt_value("simad_configs_per_s.1000", 2.26e6) == "2.26 M/s"
    assert run_all.fmt_value("meets.forward", False) == "no"
    assert run_all.fmt_value("a", None) == "n/a"
    assert run_all.fmt_value("count", 12345) == "12,345"
    assert run_all.fmt_value("note", "a|b") == "a\\|b"
    # dynamics' forward figures are env-steps/s, their cross-checks are not
    assert run_all.fmt_value("forward[n=7,B=256].mujoco", 7e5, "dynamics") == "700 k/s"
    assert run_all.fmt_value("forward[n=7,B=256].max_abs_diff_qT.mujoco", 1e-5, "dynamics") == "1.00e-05"


def test_engine_rows_pair_simad_with_the_references(run_all):
    rows = {r["figure"]: r for r in run_all.engine_rows("dynamics", run_all.flatten(DYNAMICS_LIKE))}
    assert "gradient.loss" not in rows  # not a time or a speed: no engine comparison
    fwd = rows["forward[n=2,B=256]"]
    assert (fwd["simad"], fwd["mujoco"], fwd["pinocchio"], fwd["time"]) == (2.0e6, 1.0e6, 4.0e6, False)
    assert rows["forward[n=7,B=256]"]["mujoco"] == 7.0e5 and "pinocchio" not in rows["forward[n=7,B=256]"]
    grad = next(r for f, r in rows.items() if f.startswith("dL/du"))
    assert (grad["simad"], grad["pinocchio"], grad["mujoco"], grad["time"]) == (0.0095, 0.019, 0.038, True)
    assert run_all._speed(grad, "pinocchio") == "2x"  # times: simad twice as fast
    assert run_all._speed(fwd, "mujoco") == "2x" and run_all._speed(fwd, "pinocchio") == "0.5x"  # rates
    table = run_all.engine_table(list(rows.values()), "dynamics")
    assert table.splitlines()[0].startswith("| figure | simad | MuJoCo | Pinocchio |")
    assert "9.5 ms" in table and "| 2 M/s | 1 M/s | 4 M/s | 2x | 0.5x |" in table and "600 k/s" in table


def _report(results: dict) -> dict:
    return {"date": "2025-01-01T00:00:00+00:00", "git": {"commit": "0" * 40, "dirty": False},
            "machine": {"cpus": 2}, "quick": True, "wall_s": 1.0,
            "benchmarks": {name: {"status": "ok", "result": r, "wall_s": 1.0, "command": "x", "script": "x"}
                           for name, r in results.items()}}


def test_compare_ratios_of_numeric_figures_with_the_same_key(run_all):
    old = _report({"dyn": {"machine": {"cpus": 2}, "a_s": 2.0, "rate_per_s": 100.0, "flag": True, "zero": 0.0,
                           "rows": [{"n": 7, "v": 4.0}], "gone": 1.0}})
    new = _report({"dyn": {"machine": {"cpus": 4}, "a_s": 1.0, "rate_per_s": 150.0, "flag": False, "zero": 1.0,
                           "rows": [{"n": 7, "v": 2.0}], "added": 3.0}})
    rows = {k: (o, n, r) for k, o, n, r in run_all.compare(old, new)}
    assert rows == {"dyn.a_s": (2.0, 1.0, 0.5), "dyn.rate_per_s": (100.0, 150.0, 1.5),
                    "dyn.zero": (0.0, 1.0, None), "dyn.rows[n=7].v": (4.0, 2.0, 0.5)}
    text = run_all.compare_table(run_all.compare(old, new))
    assert "| `dyn.a_s`" not in text and "dyn.a_s | 2 s | 1 s | 0.5 |" in text
    failed = _report({})
    failed["benchmarks"]["dyn"] = {"status": "failed", "result": None}
    assert run_all.compare(old, failed) == []


def test_markdown_of_a_failed_and_a_good_benchmark(run_all):
    report = _report({"dynamics": DYNAMICS_LIKE})
    report["benchmarks"]["broken"] = {"status": "failed", "error": "exit code 3", "wall_s": 0.5, "command": "c",
                                      "script": "s", "result": None, "stderr_tail": "Traceback\nValueError: boom"}
    md = run_all.render_markdown(report)
    assert "| broken | **failed** (exit code 3) |" in md
    assert "ValueError: boom" in md
    assert "| `gradient.simad_grad_s` | 9.5 ms |" in md
    assert "simad beside the reference engines" in md


FAKE_OK = """
import argparse, json
ap = argparse.ArgumentParser()
ap.add_argument("--json")
ap.add_argument("--quick", action="store_true")
a = ap.parse_args()
print("fake report")
with open(a.json, "w") as f:
    json.dump({"quick": a.quick, "speed": {"simad_per_s": 10.0, "mujoco_per_s": 5.0}, "t_s": 0.25,
               "rows": [{"B": 1, "x": 1.5}, {"B": 8, "x": 2.5}]}, f)
"""

FAKE_FAIL = """
import sys
print("about to fail", file=sys.stderr)
raise SystemExit("fake failure: the reference engine is missing")
"""


def test_real_run_of_fake_scripts(run_all, tmp_path, capsys):
    bench_dir = tmp_path / "bench"
    bench_dir.mkdir()
    (bench_dir / "bench_fake.py").write_text(textwrap.dedent(FAKE_OK))
    (bench_dir / "bench_zfail.py").write_text(textwrap.dedent(FAKE_FAIL))
    (bench_dir / "helper.py").write_text("raise SystemExit(9)\n")  # not a bench_*.py: never run
    out = tmp_path / "out"

    code = run_all.main(["--dir", str(bench_dir), "--out", str(out), "--quick"])
    assert code == 1  # one script failed
    report = json.loads((out / "benchmarks.json").read_text())
    assert set(report["benchmarks"]) == {"fake", "zfail"}
    assert report["quick"] is True and "machine" in report and "commit" in report["git"] and report["date"]
    ok = report["benchmarks"]["fake"]
    assert ok["status"] == "ok" and ok["returncode"] == 0
    assert ok["result"]["quick"] is True and ok["result"]["rows"][1]["x"] == 2.5
    bad = report["benchmarks"]["zfail"]
    assert bad["status"] == "failed" and bad["returncode"] == 1 and bad["result"] is None
    assert "fake failure" in bad["stderr_tail"]
    assert (out / "logs" / "fake.stdout.txt").read_text().strip() == "fake report"

    md = (out / "benchmarks.md").read_text()
    assert "| fake | ok |" in md and "| zfail | **failed** (exit code 1) |" in md
    assert "fake failure: the reference engine is missing" in md
    assert "| `rows[B=8].x` | 2.5 |" in md
    assert "| speed.per_s | 10/s | 5/s |" in md  # simad beside MuJoCo
    assert "2x" in md

    # --only runs a subset and succeeds; --compare prints new / old against the first report
    out2 = tmp_path / "out2"
    code = run_all.main(["--dir", str(bench_dir), "--out", str(out2), "--only", "fake",
                         "--compare", str(out / "benchmarks.json")])
    assert code == 0
    report2 = json.loads((out2 / "benchmarks.json").read_text())
    assert set(report2["benchmarks"]) == {"fake"} and report2["benchmarks"]["fake"]["result"]["quick"] is False
    printed = capsys.readouterr().out
    assert "fake.speed.simad_per_s | 10/s | 10/s | 1 |" in printed
    assert "Compared with" in (out2 / "benchmarks.md").read_text()

    # comparing two saved reports runs nothing
    assert run_all.main(["--compare", str(out / "benchmarks.json"), "--against", str(out2 / "benchmarks.json")]) == 0
    with pytest.raises(SystemExit):
        run_all.main(["--dir", str(bench_dir), "--out", str(out2), "--only", "nosuch"])
