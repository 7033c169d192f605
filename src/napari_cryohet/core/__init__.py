"""Pure computation (numpy / scipy / torch). Never imports napari, Qt or magicgui."""
