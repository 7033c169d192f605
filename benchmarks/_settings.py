"""``KEY=VALUE`` settings overrides given on a benchmark's command line (``--set``, ``--spectral``, …).

Used by ``benchmarks/chainfit_proteins.py`` and ``benchmarks/hypermolecule_pretzel.py``.
"""

from __future__ import annotations

import json


def parse_overrides(items: list[str]) -> dict:
    """``["k=60", "layout=pretzel"]`` → ``{"k": 60, "layout": "pretzel"}``: a value that reads as
    JSON (numbers, ``true``/``false``/``null``, lists, objects) is decoded, anything else kept as text."""
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        value = value.strip()
        out[key.strip()] = json.loads(value) if value[:1] in "0123456789-[{tfn" else value
    return out
