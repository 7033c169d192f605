"""Screenshot of the "Simulate your own protein" dock for docs/chainfit.md → docs/figures/simulate_own_protein.png.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/figures/simulate_own_protein.py

A 1600 × 1000 window with the session dock on the left and the simulator's dock on the
right: the bundled CFTR chain A (``sample_data/structures/6msm_A_ca.pdb``, 1181 residues,
4 gaps: the notes list them), its 3 slowest elastic-network modes up to 5 Å RMSD, 200
particles of 64 px at the suggested pixel size, run with the dock's own *Simulate* button.
The particles scene shows one noisy particle with its true Cα atoms and chains (one path
per connected piece) on top.
"""

from __future__ import annotations

from _figure import ROOT, SESSION, dock, new_viewer, settle, shot, wait

from napari_cryohet.plugin.session_widget import SessionWidget
from napari_cryohet.plugin.simulate_widget import SimulateProteinWidget

SIMULATE = "6 · Simulate your own protein (Atilgan et al. 2001)"
PDB = ROOT / "sample_data" / "structures" / "6msm_A_ca.pdb"


def main() -> None:
    viewer = new_viewer("napari-cryohet: simulate your own protein")
    dock(viewer, SessionWidget(viewer), SESSION, area="left")
    widget = SimulateProteinWidget(viewer)
    dock(viewer, widget, SIMULATE)
    widget.structure_file.value = PDB  # read at once: residues, gaps, suggested pixel size
    widget.form.n_particles.value = 200
    settle(0.3)
    widget.run_button.native.click()
    wait(widget.runner)
    viewer.dims.set_current_step(0, 3)
    viewer.reset_view()
    shot(viewer, "simulate_own_protein")
    print(widget.structure_note.value, widget.info.value, sep="\n")
    viewer.close()


if __name__ == "__main__":
    main()
