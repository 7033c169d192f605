"""The Plugins-menu entries: one session per window, docks that fit a 1600 x 1000 screen."""

from __future__ import annotations

from pathlib import Path

STAR = Path(__file__).resolve().parents[2] / "sample_data" / "adk_small" / "particles.star"
PLUGIN = "napari-cryohet"


def _names(viewer):
    from npe2 import PluginManager

    return [w.display_name for w in PluginManager.instance().get_manifest(PLUGIN).contributions.widgets]


def test_menu_docks_share_one_session_and_fit_the_screen(make_napari_viewer, qtbot):
    """napari hands each plugin widget its own viewer proxy: the session must still be the
    window's; the five docks together fit a 1000 px tall window; stage docks are tabbed."""
    from qtpy.QtWidgets import QApplication

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1600, 1000)
    viewer.open(str(STAR), plugin=PLUGIN)
    widgets = {name[0]: viewer.window.add_plugin_dock_widget(PLUGIN, name)[1] for name in sorted(_names(viewer))}
    assert {"0", "1", "2", "3", "4", "5", "6", "7"} <= set(widgets)
    for _ in range(20):
        QApplication.instance().processEvents()
    sessions = {id(w.session) for w in widgets.values()}
    assert len(sessions) == 1
    stack = widgets["1"]
    stack.index = 7  # set through the scroll-area dock onto the widget
    assert stack.inner.index == 7 and stack.current_metadata["particle"] == 7
    assert viewer.window._qt_window.height() <= 1000
    main = viewer.window._qt_window
    stage_docks = [d for name, d in viewer.window._wrapped_dock_widgets.items() if name.startswith(("2 ·", "3 ·", "4 ·", "5 ·", "6 ·", "7 ·"))]
    assert len(stage_docks) == 6
    tabbed = main.tabifiedDockWidgets(stage_docks[0])
    assert set(tabbed) == set(stage_docks[1:])
    # every dataset picker follows the session's dataset
    session = stack.session
    assert len(session.dataset) == 200
    assert all(widgets[k].dataset is session.dataset for k in "12345")
