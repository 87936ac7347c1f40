"""The mode owner: user choice vs effective mode, holds, Auto on edges (pure, injected inputs)."""

import dataclasses

import pytest

from ollamaproxy.modes import AutoInputs, InvalidModeError, Mode
from ollamaproxy.policy.efficiency import EfficiencyPolicy


class Inputs:
    def __init__(self):
        self.value = AutoInputs(on_battery=False, battery_percent=90.0, thermal="normal", hour=12)

    def __call__(self):
        return self.value

    def set(self, **changes):
        self.value = dataclasses.replace(self.value, **changes)


def make(mode="balanced"):
    inputs = Inputs()
    policy = EfficiencyPolicy(mode, auto_inputs=inputs)
    events = []
    policy.add_listener(events.append)
    return policy, inputs, events


def test_user_mode_and_effective_mode_are_separate():
    policy, inputs, events = make("auto")
    assert policy.user_mode is Mode.AUTO and policy.current.mode is Mode.BALANCED
    assert policy.current.rule == "auto:ac-power"
    inputs.set(on_battery=True, battery_percent=12.0)
    policy.refresh()
    assert policy.current.mode is Mode.ULTRA_EFFICIENCY
    assert [(e.kind, e.old, e.new) for e in events] == [("effective", "balanced", "ultra-efficiency")]


def test_manual_choice_is_not_overridden_by_later_input_changes():
    policy, inputs, events = make("performance")
    inputs.set(on_battery=True, battery_percent=5.0)
    policy.refresh()
    assert policy.current.mode is Mode.PERFORMANCE and events == []
    assert "auto is not in force" in policy.auto_reasoning()


def test_set_mode_accepts_aliases_and_rejects_unknown_with_ids():
    policy, _, events = make()
    policy.set_mode("Ultra Efficiency")
    assert policy.user_mode is Mode.ULTRA_EFFICIENCY and policy.current.mode is Mode.ULTRA_EFFICIENCY
    assert [(e.kind, e.new) for e in events] == [("mode", "ultra-efficiency"), ("effective", "ultra-efficiency")]
    with pytest.raises(InvalidModeError, match="valid modes: performance, balanced, efficiency, quiet"):
        policy.set_mode("turbo")
    assert policy.set_mode("ultra-efficiency") is None  # unchanged: no event


def test_most_efficient_hold_wins_and_release_restores():
    policy, _, events = make("performance")
    quiet = policy.hold("quiet", "recording", "org.example.Recorder", owner=":1.5")
    eff = policy.hold("efficiency", "battery saver", "org.example.Saver", owner=":1.6")
    assert policy.current.mode is Mode.QUIET and policy.current.rule == "hold:org.example.Recorder"
    with pytest.raises(PermissionError):
        policy.release(quiet, owner=":1.6")  # only the holder releases its own
    policy.release(quiet, owner=":1.5")
    assert policy.current.mode is Mode.EFFICIENCY
    assert policy.release_owner(":1.6")[0].cookie == eff
    assert policy.current.mode is Mode.PERFORMANCE and policy.holds == {}
    with pytest.raises(KeyError):
        policy.release(eff)


def test_manual_set_mode_cancels_holds():
    policy, _, _ = make()
    policy.hold("ultra-efficiency", "", "app", owner=":1.9")
    policy.set_mode("performance")
    assert policy.holds == {} and policy.current.mode is Mode.PERFORMANCE


def test_hold_needs_a_concrete_mode():
    policy, _, _ = make()
    with pytest.raises(InvalidModeError):
        policy.hold("auto", "", "app")
