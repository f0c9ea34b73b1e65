"""The contact examples, in-process (no server): the billiards shot is aimed into the pocket and
the box's restitution and friction are recovered from a noisy recording."""

import importlib.util
import json
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_billiards_shot_is_aimed_into_the_pocket_by_gradient_descent(tmp_path):
    ex = _example("billiards_aim")
    s = ex.run("impulse", iterations=30, out=tmp_path, verbose=False)  # the default run of the script
    assert s["success"], s["final_distance_m"]
    assert s["initial_distance_m"] > 0.15  # the initial guess hits the object ball but misses the pocket
    assert s["final_distance_m"] < 0.25 * s["initial_distance_m"]
    losses = [h["loss"] for h in s["history"]]
    assert all(b <= a for a, b in zip(losses, losses[1:], strict=False))  # the line search never goes uphill
    q = s["gradient_quality"]
    assert q["mode_switches"] >= 2  # the balls collided (contact on, then off)
    assert q["fd_rel_error"] < 1e-4, q  # the gradient of the final shot agrees with finite differences
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["final_distance_m"] == pytest.approx(s["final_distance_m"])
    assert (tmp_path / "billiards_aim.png").stat().st_size > 10_000


def test_box_restitution_and_friction_are_recovered_from_a_noisy_recording(tmp_path):
    ex = _example("fit_bounce_slide")
    s = ex.run("impulse", iterations=30, out=tmp_path, verbose=False)  # the default run of the script
    assert s["success"], s["recovered"]
    assert max(s["relative_error"].values()) < 0.02, s["relative_error"]
    within = [max(abs(h["restitution"] - 0.5) / 0.5, abs(h["friction"] - 0.3) / 0.3) < 0.1 for h in s["history"]]
    assert within.index(True) <= 10  # both within 10 % after a few iterations (7 measured)
    assert s["final_loss"] < 0.01 * s["initial_loss"]
    assert s["final_loss"] < 10 * s["noise_floor_loss"]  # near what the noise alone leaves (6600x at the start)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["true"] == {"restitution": 0.5, "friction": 0.3}
    assert summary["initial"] == {"restitution": 0.2, "friction": 0.6}
    assert (tmp_path / "fit_bounce_slide.png").stat().st_size > 10_000
