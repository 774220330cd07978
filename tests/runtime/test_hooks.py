"""The test hook: a named point does nothing unless a handler is installed."""

from invspread_edge_runtime import hooks


def test_the_pause_hook_does_nothing_unless_asked(tmp_path, monkeypatch):
    monkeypatch.delenv(hooks.PAUSE_AT, raising=False)
    monkeypatch.setenv(hooks.PAUSE_MARKER, str(tmp_path / "marker"))
    assert hooks.pause_from_environment() is None
    monkeypatch.setenv(hooks.PAUSE_AT, "embed-join")
    monkeypatch.setenv(hooks.PAUSE_RELEASE, str(tmp_path / "release"))
    (tmp_path / "release").write_text("go")  # released already: returns at once
    pause = hooks.pause_from_environment()
    assert pause is not None
    pause("index-save")
    assert not (tmp_path / "marker").exists()
    pause("embed-join")
    assert (tmp_path / "marker").read_text().split()[1] == "embed-join"


def test_reached_calls_the_installed_hook_and_nothing_once_removed():
    seen: list[str] = []
    previous = hooks.set_hook(seen.append)
    try:
        hooks.reached("index-save")
        hooks.set_hook(None)
        hooks.reached("embed-join")
    finally:
        hooks.set_hook(previous)
    assert seen == ["index-save"]


def test_a_folder_swap_reaches_its_point(tmp_path):
    from invspread_edge_runtime.files import replace_folder

    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    seen: list[tuple[str, bool]] = []
    previous = hooks.set_hook(lambda point: seen.append((point, (tmp_path / "old").exists())))
    try:
        replace_folder(tmp_path / "new", tmp_path / "old", hook_point="embed-swap")
    finally:
        hooks.set_hook(previous)
    assert seen == [("embed-swap", False)]  # between the renames: the old folder aside, the new not in
