"""File formats: MRC stacks, RELION star files, cryoDRGN pickles, PDB/mmCIF."""
