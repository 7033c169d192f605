"""``cryohet demo`` without a display (issue 19, item 1): the walkthrough runs headless at tiny
sizes, writes one screenshot per stage showing a result (not a blank window) and a summary
(JSON with every key, Markdown) whose last step says how the results compare with the truth;
without Xvfb the steps still run and the command still exits 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

STAGES = ["simulate", "spectral", "chainfit", "vae", "refine", "hypermolecule", "truth_check"]


def _no_display_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = "1"
    return env


def _check_summary(out, *, screenshots: bool) -> dict:
    data = json.loads((out / "summary.json").read_text())
    assert [s["name"] for s in data["stages"]] == STAGES
    for entry in data["stages"]:
        assert {"name", "seconds", "screenshot", "headline"} <= set(entry)
        assert {"metric", "value", "truth_check"} <= set(entry["headline"])
        check = entry["headline"]["truth_check"]
        if entry["skipped"]:
            continue
        assert entry["seconds"] >= 0 and np.isfinite(entry["headline"]["value"])
        assert isinstance(check["passed"], bool) and check["rule"][:2] in ("<=", ">=")
        assert (entry["screenshot"] is not None) == screenshots
    stages = {s["name"]: s for s in data["stages"]}
    # the simulation's noise is measured as requested: the check passes on any size
    assert stages["simulate"]["headline"]["truth_check"]["passed"] is True
    assert stages["simulate"]["headline"]["value"] < 0.2
    # the last step sums up the others
    checked = [s["headline"]["truth_check"]["passed"] for s in data["stages"][:-1] if not s["skipped"]]
    assert stages["truth_check"]["headline"]["value"] == pytest.approx(sum(checked) / len(checked), abs=1e-4)
    assert data["all_passed"] == all(checked)
    md = (out / "summary.md").read_text()
    assert "Verdict" in md and all(f"| {name} |" in md for name in STAGES)
    return data


@pytest.mark.gui
def test_demo_headless_writes_screenshots_and_summary(tmp_path):
    out = tmp_path / "demo_output"
    result = subprocess.run(
        [sys.executable, "-m", "napari_cryohet.cli", "demo", "--headless", "--size", "tiny", "--out", str(out)],
        env=_no_display_env(), capture_output=True, text=True, timeout=400,
    )
    print(result.stdout[-3000:])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "truth check" in result.stdout
    data = _check_summary(out, screenshots=True)
    import matplotlib.image

    for entry in data["stages"]:
        if entry["skipped"]:
            continue
        png = out / entry["screenshot"]
        assert png.is_file(), png
        pixels = matplotlib.image.imread(png)[..., :3]  # (H, W, 3) floats in [0, 1]
        assert pixels.shape[0] >= 800 and pixels.shape[1] >= 1400
        gray = pixels.mean(axis=-1)
        assert gray.std() > 0.05, entry["name"]  # not a blank window
        # the canvas (left part of the window, away from the docks) draws something
        h, w = gray.shape
        canvas = pixels[h // 4: 3 * h // 4, w // 10: w // 3]
        assert len(np.unique(np.round(canvas.reshape(-1, 3), 1), axis=0)) > 3, entry["name"]
    # the stages' screenshots are not all the same picture
    shots = [matplotlib.image.imread(out / e["screenshot"])[..., :3] for e in data["stages"] if e["screenshot"]]
    h = min(s.shape[0] for s in shots)  # the window grows to the docks' height: compare the common part
    assert min(np.abs(a[:h] - b[:h]).mean() for a, b in zip(shots, shots[1:], strict=False)) > 1e-3


def test_demo_without_any_display_still_runs_the_steps(tmp_path, monkeypatch, one_thread, capsys):
    """No DISPLAY and no Xvfb: the steps run, the summary is written without screenshots, exit 0."""
    import argparse

    import pyvirtualdisplay

    from napari_cryohet.cli import demo

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)

    class NoXvfb:
        def __init__(self, *a, **k):
            pass

        def start(self):
            raise FileNotFoundError("Xvfb")

    monkeypatch.setattr(pyvirtualdisplay, "Display", NoXvfb)
    out = tmp_path / "out"
    args = argparse.Namespace(headless=False, out=out, size="tiny", reuse=False)
    assert demo.main(args) == 0
    captured = capsys.readouterr()
    assert "without screenshots" in captured.err and "Xvfb" in captured.err
    _check_summary(out, screenshots=False)
