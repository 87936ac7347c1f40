"""The user's mode survives restarts; a broken state file is survivable."""

from ollamaproxy.statefile import StateFile


def test_mode_round_trip_and_bad_files(tmp_path):
    state = StateFile(tmp_path / "sub" / "state.json")
    assert state.load_mode() is None
    state.save_mode("quiet")
    assert StateFile(tmp_path / "sub" / "state.json").load_mode() == "quiet"
    (tmp_path / "sub" / "state.json").write_text("{not json")
    assert state.load_mode() is None
    (tmp_path / "sub" / "state.json").write_text('{"mode": "turbo"}')
    assert state.load_mode() is None
    (tmp_path / "sub" / "state.json").write_text('{"mode": "Ultra Efficiency"}')
    assert state.load_mode() == "ultra-efficiency"
