"""Efficiency modes: parsing and aliases, ranks, specs, display data, Auto rules and hysteresis (pure)."""

import pytest

from ollamaproxy.config import HARDWARE_KINDS
from ollamaproxy.modes import (
    AUTO_RULES,
    MODE_IDS,
    MODE_SPECS,
    AutoDecision,
    AutoInputs,
    InvalidModeError,
    Mode,
    efficiency_rank,
    in_quiet_hours,
    mode_info,
    parse_mode,
    resolve_auto,
)

# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize("text, mode", [
    ("performance", Mode.PERFORMANCE), ("Performance", Mode.PERFORMANCE), ("  BALANCED ", Mode.BALANCED),
    ("Efficiency", Mode.EFFICIENCY), ("Quiet", Mode.QUIET), ("Auto", Mode.AUTO),
    ("ultra-efficiency", Mode.ULTRA_EFFICIENCY), ("Ultra Efficiency", Mode.ULTRA_EFFICIENCY),
    ("UltraEfficiency", Mode.ULTRA_EFFICIENCY), ("ultra_efficiency", Mode.ULTRA_EFFICIENCY),
    ("ultraefficiency", Mode.ULTRA_EFFICIENCY), ("ULTRA  -  EFFICIENCY", Mode.ULTRA_EFFICIENCY),
    (Mode.QUIET, Mode.QUIET),
])
def test_parse_mode_accepts_ids_and_seed_spellings(text, mode):
    assert parse_mode(text) is mode


@pytest.mark.parametrize("text", ["turbo", "", "power-saver", "bal-anced", "ultra", "performance!", None, 3])
def test_unknown_mode_message_lists_valid_ids(text):
    with pytest.raises(InvalidModeError) as caught:
        parse_mode(text)
    message = str(caught.value)
    assert message == (f"unknown mode {text!r}; valid modes: "
                       "performance, balanced, efficiency, quiet, ultra-efficiency, auto")
    assert isinstance(caught.value, ValueError)


def test_mode_ids_are_stable_lowercase_strings():
    assert MODE_IDS == ("performance", "balanced", "efficiency", "quiet", "ultra-efficiency", "auto")
    assert Mode.ULTRA_EFFICIENCY == "ultra-efficiency" and str(Mode.ULTRA_EFFICIENCY) == "ultra-efficiency"


# ---------------------------------------------------------------- ranks and specs


def test_efficiency_rank_orders_least_to_most_efficient():
    ordered = [Mode.PERFORMANCE, Mode.BALANCED, Mode.EFFICIENCY, Mode.QUIET, Mode.ULTRA_EFFICIENCY]
    assert [efficiency_rank(m) for m in ordered] == [0, 1, 2, 3, 4]
    assert max([Mode.BALANCED, Mode.ULTRA_EFFICIENCY, Mode.QUIET], key=efficiency_rank) is Mode.ULTRA_EFFICIENCY


def test_auto_has_no_efficiency_rank():
    with pytest.raises(ValueError, match="auto"):
        efficiency_rank(Mode.AUTO)


@pytest.mark.parametrize("mode", list(Mode))
def test_every_spec_is_consistent(mode):
    spec = MODE_SPECS[mode]
    assert spec.mode is mode
    assert spec.label and spec.description.endswith(".") and spec.icon.endswith("-symbolic")
    assert spec.allowed_hardware <= set(HARDWARE_KINDS) and spec.allowed_hardware
    assert spec.fallback_hardware <= set(HARDWARE_KINDS)
    assert not spec.allowed_hardware & spec.fallback_hardware
    assert not spec.lowest_power_only or spec.fallback_hardware
    for weight in (spec.w_latency, spec.w_energy, spec.w_load, spec.w_residency):
        assert weight >= 0.0
    assert spec.w_latency + spec.w_energy > 0.0
    assert spec.max_backend_watts is None or spec.max_backend_watts > 0
    assert spec.max_temperature_c is None or spec.max_temperature_c > 0


def test_spec_constraints_follow_the_design_intents():
    assert MODE_SPECS[Mode.PERFORMANCE].w_energy == 0.0
    assert MODE_SPECS[Mode.EFFICIENCY].max_backend_watts == 60.0
    assert MODE_SPECS[Mode.EFFICIENCY].w_energy > MODE_SPECS[Mode.EFFICIENCY].w_latency
    quiet = MODE_SPECS[Mode.QUIET]
    assert "nvidia" not in quiet.allowed_hardware and quiet.fallback_hardware == {"nvidia"}
    assert quiet.max_temperature_c == 70.0
    ultra = MODE_SPECS[Mode.ULTRA_EFFICIENCY]
    assert ultra.allowed_hardware == {"npu"} and ultra.lowest_power_only and ultra.queue_rather_than_escalate
    labels = [MODE_SPECS[m].label for m in Mode]
    assert labels == ["Performance", "Balanced", "Efficiency", "Quiet", "Ultra Efficiency", "Auto"]


def test_mode_info_gives_display_data():
    assert mode_info(Mode.QUIET) == {"id": "quiet", "label": "Quiet", "description": MODE_SPECS[Mode.QUIET].description,
                                     "icon": "weather-clear-night-symbolic"}
    assert mode_info("Ultra Efficiency")["id"] == "ultra-efficiency"
    assert set(mode_info(Mode.AUTO)) == {"id", "label", "description", "icon"}


# ---------------------------------------------------------------- Auto: the rule table


def auto(on_battery=False, percent=None, thermal="normal", hour=12, quiet_hours=(22, 7), previous=None, **kw):
    return resolve_auto(AutoInputs(on_battery, percent, thermal, hour, quiet_hours), previous, **kw)


def test_rule_table_is_documented_data_in_priority_order():
    assert [(r.rule, r.mode) for r in AUTO_RULES] == [
        ("thermal-hot", Mode.QUIET), ("battery-critical", Mode.ULTRA_EFFICIENCY),
        ("battery-low", Mode.EFFICIENCY), ("quiet-hours", Mode.QUIET), ("on-battery", Mode.BALANCED),
        ("ac-power", Mode.BALANCED), ("default", Mode.BALANCED)]
    assert all(r.condition for r in AUTO_RULES)
    assert Mode.PERFORMANCE not in {r.mode for r in AUTO_RULES}


@pytest.mark.parametrize("kwargs, rule, mode", [
    (dict(thermal="hot", on_battery=True, percent=5), "thermal-hot", Mode.QUIET),
    (dict(on_battery=True, percent=15), "battery-critical", Mode.ULTRA_EFFICIENCY),
    (dict(on_battery=True, percent=3, hour=23), "battery-critical", Mode.ULTRA_EFFICIENCY),
    (dict(on_battery=True, percent=40), "battery-low", Mode.EFFICIENCY),
    (dict(on_battery=True, percent=15.1), "battery-low", Mode.EFFICIENCY),
    (dict(on_battery=True, percent=80, hour=23), "quiet-hours", Mode.QUIET),
    (dict(on_battery=False, hour=3), "quiet-hours", Mode.QUIET),
    (dict(on_battery=True, percent=40.5), "on-battery", Mode.BALANCED),
    (dict(on_battery=False, hour=7), "ac-power", Mode.BALANCED),
    (dict(on_battery=False, thermal="warm"), "ac-power", Mode.BALANCED),
    (dict(on_battery=None), "default", Mode.BALANCED),
    (dict(on_battery=False, hour=23, quiet_hours=None), "ac-power", Mode.BALANCED),
])
def test_auto_rules_one_by_one(kwargs, rule, mode):
    decision = auto(**kwargs)
    assert (decision.rule, decision.mode) == (rule, mode)
    assert decision.reason.endswith(".")


def test_unknown_battery_inputs_skip_the_battery_rules():
    assert auto(on_battery=True, percent=None).rule == "on-battery"
    assert "unknown" in auto(on_battery=True, percent=None).reason
    assert auto(on_battery=None, percent=5).rule == "default"      # level without a known source
    assert auto(on_battery=False, percent=5).rule == "ac-power"    # charging at 5 %: no saving needed


def test_quiet_hours_wrap_midnight_and_can_be_same_day_or_off():
    assert [h for h in range(24) if in_quiet_hours(h, (22, 7))] == [0, 1, 2, 3, 4, 5, 6, 22, 23]
    assert [h for h in range(24) if in_quiet_hours(h, (13, 15))] == [13, 14]
    assert not any(in_quiet_hours(h, (8, 8)) for h in range(24))
    assert not in_quiet_hours(23, None)


@pytest.mark.parametrize("kwargs", [dict(thermal="scorching"), dict(hour=24), dict(quiet_hours=(22, 25))])
def test_bad_auto_inputs_raise(kwargs):
    with pytest.raises(ValueError):
        auto(**kwargs)


# ---------------------------------------------------------------- Auto: hysteresis


def follow(levels, **kw):
    decisions, previous = [], None
    for level in levels:
        previous = auto(on_battery=True, percent=level, previous=previous, **kw)
        decisions.append(previous)
    return decisions


def test_battery_critical_switches_at_threshold_and_back_only_above_threshold_plus_hysteresis():
    decisions = follow([16, 14.9, 15.1, 19.9, 20.0, 20.1])
    assert [d.mode for d in decisions] == [Mode.EFFICIENCY, Mode.ULTRA_EFFICIENCY, Mode.ULTRA_EFFICIENCY,
                                           Mode.ULTRA_EFFICIENCY, Mode.ULTRA_EFFICIENCY, Mode.EFFICIENCY]
    assert "above 20 %" in decisions[2].reason


def test_wobbling_around_a_threshold_does_not_flap():
    modes = [d.mode for d in follow([14.9, 15.1, 14.9, 15.1, 14.9])]
    assert modes == [Mode.ULTRA_EFFICIENCY] * 5


def test_without_previous_decision_there_is_no_hysteresis():
    assert auto(on_battery=True, percent=17).mode is Mode.EFFICIENCY


def test_hysteresis_width_is_a_parameter():
    decisions = follow([14, 16, 18], hysteresis_percent=2.0)
    assert [d.rule for d in decisions] == ["battery-critical", "battery-critical", "battery-low"]


def test_a_stricter_battery_rule_also_holds_the_milder_one():
    critical = AutoDecision(Mode.ULTRA_EFFICIENCY, "battery-critical", "")
    assert auto(on_battery=True, percent=44, previous=critical).rule == "battery-low"
    assert auto(on_battery=True, percent=45.5, previous=critical).rule == "on-battery"
    low = AutoDecision(Mode.EFFICIENCY, "battery-low", "")
    assert auto(on_battery=True, percent=16, previous=low).rule == "battery-low"   # milder holds no stricter


def test_plugging_in_ends_battery_rules_at_once():
    critical = AutoDecision(Mode.ULTRA_EFFICIENCY, "battery-critical", "")
    assert auto(on_battery=False, percent=12, previous=critical).rule == "ac-power"


def test_thermal_hot_overrides_battery_hysteresis():
    critical = AutoDecision(Mode.ULTRA_EFFICIENCY, "battery-critical", "")
    assert auto(on_battery=True, percent=12, thermal="hot", previous=critical).rule == "thermal-hot"
