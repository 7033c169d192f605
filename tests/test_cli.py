"""The ``cryohet info`` and ``cryohet demo`` subcommands on the bundled sample."""

from __future__ import annotations

from pathlib import Path

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
