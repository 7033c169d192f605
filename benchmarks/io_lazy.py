"""Lazy loading of a large particle dataset: open time and resident memory.

Writes a synthetic RELION 3.1 star file with ``--n`` rows (10^6 by default, 10^4 with
``--quick``) whose ``rlnImageName`` points into a large ``.mrcs`` stack written as a
*sparse* file (a valid MRC header with ``nz = n``, the file truncated to its full size, so
no data blocks are written: 10^6 images of 64² float32 are 16 GB apparent, ~0 on disk),
plus a handful of real images at random positions. Then, in a fresh child process (so
the generator's memory does not count), it times ``load_dataset(star)`` and measures the
growth of the resident set (``/proc`` via psutil), and reads a few random particles,
checking the planted images come back.

Reading the whole stack would cost ``n · D² · 4`` bytes of RSS; the figures show the
open costs only the metadata table.

Usage::

    .venv/bin/python benchmarks/io_lazy.py --quick --json out.json
    .venv/bin/python benchmarks/io_lazy.py            # 10^6 rows

JSON keys: ``n_particles``, ``open_seconds``, ``rss_mb`` (+ ``peak_rss_mb``,
``open_cpu_seconds`` (CPU time of the open, meaningful when other jobs share the cores),
``read_seconds``, ``stack_apparent_gb``, ``stack_disk_mb``, ``star_mb``, ``write_seconds``,
``box_size``, ``planted_ok``). The last line printed is a one-line summary.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd

D_DEFAULT = 64
APIX = 1.5


def write_sparse_stack(path: Path, n: int, d: int, planted: dict[int, np.ndarray]) -> None:
    """An ``(n, d, d)`` float32 MRC stack with no data blocks except ``planted`` images."""
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.zeros((1, d, d), dtype=np.float32))
        mrc.set_image_stack()
        mrc.voxel_size = APIX
    with mrcfile.open(path, mode="r+", header_only=True) as mrc:
        header_bytes = 1024 + int(mrc.header.nsymbt)
    # patch nz (and mz for consistency) in place, then extend the file without writing data
    with open(path, "r+b") as f:
        f.seek(8)
        f.write(np.int32(n).tobytes())
        f.seek(36)
        f.write(np.int32(1).tobytes())  # mz = 1 for an image stack
        os.truncate(f.fileno(), header_bytes + n * d * d * 4)
        for index, image in planted.items():
            f.seek(header_bytes + index * d * d * 4)
            f.write(np.ascontiguousarray(image, dtype="<f4").tobytes())


def write_star(path: Path, n: int, d: int, stack_name: str, rng: np.random.Generator) -> None:
    """A RELION 3.1 star file of ``n`` particles, written with pandas (fast)."""
    optics = (
        "# version 30001\n\ndata_optics\n\nloop_\n_rlnOpticsGroupName #1\n_rlnOpticsGroup #2\n"
        "_rlnVoltage #3\n_rlnSphericalAberration #4\n_rlnAmplitudeContrast #5\n_rlnImagePixelSize #6\n"
        f"_rlnImageSize #7\n_rlnImageDimensionality #8\nopticsGroup1 1 300.0 2.7 0.1 {APIX} {d} 2\n\n"
    )
    cols = {
        "rlnImageName": pd.Series(np.arange(1, n + 1)).astype(str).str.zfill(6) + "@" + stack_name,
        "rlnAngleRot": rng.uniform(-180, 180, n),
        "rlnAngleTilt": rng.uniform(0, 180, n),
        "rlnAnglePsi": rng.uniform(-180, 180, n),
        "rlnOriginXAngst": rng.normal(0, 3, n),
        "rlnOriginYAngst": rng.normal(0, 3, n),
        "rlnDefocusU": rng.uniform(5000, 30000, n),
        "rlnDefocusV": rng.uniform(5000, 30000, n),
        "rlnDefocusAngle": rng.uniform(-90, 90, n),
        "rlnOpticsGroup": np.ones(n, dtype=np.int64),
        "rlnClassNumber": rng.integers(1, 5, n),
    }
    df = pd.DataFrame(cols)
    header = "# version 30001\n\ndata_particles\n\nloop_\n" + "".join(
        f"_{c} #{i}\n" for i, c in enumerate(df.columns, 1))
    with open(path, "w") as f:
        f.write(optics + header)
        df.to_csv(f, sep=" ", header=False, index=False, float_format="%.6f", lineterminator="\n")


def measure(star: Path, planted_json: Path) -> dict:
    """Run in a child process: open the dataset, measure time and RSS, read some images."""
    import resource

    import psutil

    from napari_cryohet.io.load_particles import load_dataset

    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    t0, c0 = time.perf_counter(), time.process_time()
    ds = load_dataset(star, require=("images", "poses", "ctf"))
    open_s = time.perf_counter() - t0
    open_cpu_s = time.process_time() - c0  # robust to other jobs sharing the cores
    rss1 = proc.memory_info().rss
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    planted = {int(k): np.asarray(v, dtype=np.float32) for k, v in json.loads(planted_json.read_text()).items()}
    rng = np.random.default_rng(1)
    picks = np.concatenate([rng.integers(0, len(ds), 8), list(planted)])
    t0 = time.perf_counter()
    images = ds.get_images(picks)
    read_s = time.perf_counter() - t0
    ok = all(np.array_equal(images[len(picks) - len(planted) + i], planted[k]) for i, k in enumerate(planted))
    return {
        "n_particles": len(ds),
        "open_seconds": round(open_s, 3),
        "open_cpu_seconds": round(open_cpu_s, 3),
        "rss_mb": round((rss1 - rss0) / 2**20, 1),
        "peak_rss_mb": round(max(0.0, peak_kb * 1024 - rss0, rss1 - rss0) / 2**20, 1),
        "read_seconds": round(read_s, 4),
        "rss_after_read_mb": round((proc.memory_info().rss - rss0) / 2**20, 1),
        "planted_ok": bool(ok),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="10^4 rows (same keys)")
    p.add_argument("--n", type=int, default=None, help="number of particles (default 10^6, 10^4 with --quick)")
    p.add_argument("--box", type=int, default=D_DEFAULT, help="box size D")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("--workdir", type=Path, default=None, help="where to write the files (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the generated files")
    p.add_argument("--measure", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return {}
    n = args.n or (10_000 if args.quick else 1_000_000)
    d = args.box
    work = Path(tempfile.mkdtemp(prefix="io_lazy_", dir=args.workdir))
    try:
        rng = np.random.default_rng(0)
        planted = {int(k): rng.normal(size=(d, d)).astype(np.float32) for k in rng.choice(n, 3, replace=False)}
        t0 = time.perf_counter()
        stack = work / "Extract" / "big.mrcs"
        stack.parent.mkdir()
        write_sparse_stack(stack, n, d, planted)
        star = work / "particles.star"
        write_star(star, n, d, "Extract/big.mrcs", rng)
        write_s = time.perf_counter() - t0
        planted_json = work / "planted.json"
        planted_json.write_text(json.dumps({k: v.tolist() for k, v in planted.items()}))
        child = subprocess.run([sys.executable, __file__, "--measure", str(star), str(planted_json)],
                               capture_output=True, text=True, check=False)
        if child.returncode != 0:
            sys.stderr.write(child.stdout + child.stderr)
            raise SystemExit(child.returncode)
        result = json.loads(child.stdout.strip().splitlines()[-1])
        st = stack.stat()
        result.update(
            box_size=d,
            stack_apparent_gb=round(st.st_size / 1e9, 2),
            stack_disk_mb=round(st.st_blocks * 512 / 2**20, 2),
            star_mb=round(star.stat().st_size / 2**20, 1),
            write_seconds=round(write_s, 2),
            full_stack_mb=round(n * d * d * 4 / 2**20, 1),
        )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(
        f"io_lazy: {result['n_particles']} particles ({d}px, stack {result['stack_apparent_gb']} GB apparent) "
        f"opened in {result['open_seconds']} s ({result['open_cpu_seconds']} s CPU), RSS +{result['rss_mb']} MB (peak +{result['peak_rss_mb']} MB; "
        f"whole stack would be {result['full_stack_mb']} MB), {len(planted) + 8} random reads in "
        f"{result['read_seconds']} s, planted images {'ok' if result['planted_ok'] else 'WRONG'}"
    )
    return result


if __name__ == "__main__":
    main()
