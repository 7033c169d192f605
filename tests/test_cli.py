"""The ``cryohet info`` and ``cryohet demo`` subcommands on the bundled sample."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import starfile

from napari_cryohet.cli import main

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "adk_small" / "particles.star"


def test_info_summarises_the_sample(capsys):
    tables = starfile.read(SAMPLE, always_dict=True)
    particles, optics = tables["particles"], tables["optics"]
    assert main(["info", str(SAMPLE)]) == 0
    out = capsys.readouterr().out
    fields = dict(line.split(":", 1) for line in out.splitlines())
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    assert int(fields["particles"]) == len(particles)
    assert fields["box"] == f"{int(optics['rlnImageSize'][0])} px"
    assert float(fields["pixel size"].split()[0]) == pytest.approx(float(optics["rlnImagePixelSize"][0]))
    assert fields["poses"] == fields["ctf"] == "yes"
    assert fields["columns"].split(", ") == list(particles.columns)


def test_info_names_the_bad_file(tmp_path, capsys):
    bad = tmp_path / "broken.mrcs"
    bad.write_bytes(b"\x00" * 100)
    assert main(["info", str(bad)]) == 2
    assert "broken.mrcs" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_headless_writes_a_screenshot(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    result = subprocess.run(
        [sys.executable, "-m", "napari_cryohet.cli", "demo", "--headless", "--out", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    png = tmp_path / "stack_viewer.png"
    assert png.is_file() and png.stat().st_size > 20_000
    import matplotlib.image

    pixels = matplotlib.image.imread(png)  # (H, W, 3|4) floats in [0, 1]
    assert pixels.shape[0] >= 600 and pixels.shape[1] >= 1000
    gray = pixels[..., :3].mean(axis=-1)
    assert gray.std() > 0.05  # not a blank window
    # the canvas (left of the dock) shows a noisy particle, not a flat background
    h, w = gray.shape
    centre = gray[h // 2 - 50 : h // 2 + 50, w // 2 - 200 : w // 2 - 100]
    assert centre.std() > 0.1
    assert len(np.unique(np.round(centre, 2))) > 20


def _help_texts() -> dict[str, str]:
    """``cryohet [<command> [<subcommand>]] --help`` → its text, for every (sub)command."""
    import argparse

    from napari_cryohet.cli import build_parser

    texts: dict[str, str] = {}

    def walk(parser: argparse.ArgumentParser, words: tuple[str, ...]) -> None:
        texts[" ".join(("cryohet", *words))] = parser.format_help()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, (*words, name))

    walk(build_parser(), ())
    return texts


def test_every_help_reads_as_plain_text(capsys):
    import re

    texts = _help_texts()
    assert {"cryohet spectral", "cryohet chainfit", "cryohet vae train", "cryohet vae decode", "cryohet ws ls",
            "cryohet simulate", "cryohet demo", "cryohet info"} <= set(texts)
    for words, text in texts.items():
        for markup in ("``", ":func:", ":class:", ":mod:", ":meth:", "seed 0", "**"):
            assert markup not in text, (words, markup)
        # a section or equation number always comes with the paper's authors and year nearby
        for m in re.finditer("§", text):
            near = text[max(0, m.start() - 120): m.end() + 120]
            assert re.search(r"(et al\.|Singer|Scheres|Coeff|Lafon)\s*\(?(19|20)\d\d", near), (words, near)
    # the real command line prints the same text
    with pytest.raises(SystemExit):
        main(["spectral", "--help"])
    assert capsys.readouterr().out == texts["cryohet spectral"]
