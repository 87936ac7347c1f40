"""Efficiency modes as data: ids, labels, icons, routing constraints and weights, and Auto resolution (pure).

Auto resolution walks `AUTO_RULES` top to bottom and takes the first rule that applies:

    rule              applies when                                         mode
    thermal-hot       thermal state is "hot" (a thermal breaker is open)   quiet
    battery-critical  on battery and battery <= 15 %                       ultra-efficiency
    battery-low       on battery and battery <= 40 %                       efficiency
    quiet-hours       local hour inside the quiet hours (22:00-07:00)      quiet
    on-battery        on battery (level above 40 % or unknown)             balanced
    ac-power          on AC power                                          balanced
    default           power source unknown (no battery information)       balanced

Auto never chooses performance: that stays a manual choice (or an application's hold).
Battery thresholds have hysteresis: once a battery rule has fired, it (and every milder battery
rule) stays in force until the level rises above its threshold plus `hysteresis_percent`, so a
level wobbling around 15 % does not flap between modes. Thermal hysteresis belongs to the
thermal breakers, which decide when the state stops being "hot".
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from ollamaproxy.config import HARDWARE_KINDS


class Mode(str, enum.Enum):
    PERFORMANCE = "performance"
    BALANCED = "balanced"
    EFFICIENCY = "efficiency"
    QUIET = "quiet"
    ULTRA_EFFICIENCY = "ultra-efficiency"
    AUTO = "auto"

    def __str__(self) -> str:
        return self.value


MODE_IDS: tuple[str, ...] = tuple(mode.value for mode in Mode)

# Least to most efficient; "the most efficient hold wins" compares these. Quiet ranks above
# efficiency because it also keeps the dGPU out and caps temperatures, so it saves at least as much.
_EFFICIENCY_RANK = {
    Mode.PERFORMANCE: 0,
    Mode.BALANCED: 1,
    Mode.EFFICIENCY: 2,
    Mode.QUIET: 3,
    Mode.ULTRA_EFFICIENCY: 4,
}


class InvalidModeError(ValueError):
    """A mode id that is not one of `MODE_IDS`; the message lists the valid ids."""

    def __init__(self, text: object):
        self.text = text
        super().__init__(f"unknown mode {text!r}; valid modes: {', '.join(MODE_IDS)}")


def efficiency_rank(mode: Mode) -> int:
    """0 for performance up to 4 for ultra-efficiency; auto has no rank and raises ValueError."""
    try:
        return _EFFICIENCY_RANK[mode]
    except KeyError:
        raise ValueError(f"mode {str(mode)!r} has no efficiency rank; resolve auto first") from None


# Accepted spellings after lower-casing and turning runs of spaces, '_' and '-' into one '-'.
_ALIASES: dict[str, Mode] = {mode.value: mode for mode in Mode}
_ALIASES["ultraefficiency"] = Mode.ULTRA_EFFICIENCY
_SEPARATORS = re.compile(r"[\s_-]+")


def parse_mode(text: str) -> Mode:
    """Mode for an id or one of the seed's spellings ("Ultra Efficiency", "UltraEfficiency", "ultra_efficiency")."""
    if isinstance(text, Mode):
        return text
    if not isinstance(text, str):
        raise InvalidModeError(text)
    key = _SEPARATORS.sub("-", text.strip().lower())
    try:
        return _ALIASES[key]
    except KeyError:
        raise InvalidModeError(text) from None


@dataclass(frozen=True, slots=True)
class ModeSpec:
    """What a mode means to routing: hard constraints first, then score weights (lower score wins).

    - `allowed_hardware`: kinds that may serve. `fallback_hardware`: kinds used only when no
      allowed-kind backend survives the other constraints.
    - `lowest_power_only`: when serving from fallback kinds, keep only the lowest-power survivors.
    - `max_backend_watts` / `max_temperature_c`: per-backend caps (None = no cap).
      `cap_waived_for_latency_critical`: the power cap is a preference a latency-critical request
      may override, not a protection.
    - `queue_rather_than_escalate`: when the chosen backends are busy, wait for them instead of
      failing over to a hungrier backend (read by the scheduler).
    - weights: latency and energy are normalised to the best survivor (1.0 = best); load is
      in_flight/capacity; residency is 0 when the model is loaded, 1 when it must be loaded.
    """

    mode: Mode
    label: str
    description: str
    icon: str
    allowed_hardware: frozenset[str] = frozenset(HARDWARE_KINDS)
    fallback_hardware: frozenset[str] = frozenset()
    lowest_power_only: bool = False
    max_backend_watts: float | None = None
    cap_waived_for_latency_critical: bool = False
    max_temperature_c: float | None = None
    queue_rather_than_escalate: bool = False
    w_latency: float = 0.5
    w_energy: float = 0.5
    w_load: float = 0.3
    w_residency: float = 0.5


_ALL = frozenset(HARDWARE_KINDS)

MODE_SPECS: dict[Mode, ModeSpec] = {
    Mode.PERFORMANCE: ModeSpec(
        Mode.PERFORMANCE, "Performance",
        "Lowest expected latency on any backend.",
        "power-profile-performance-symbolic",
        w_latency=1.0, w_energy=0.0, w_load=0.3, w_residency=0.5),
    Mode.BALANCED: ModeSpec(
        Mode.BALANCED, "Balanced",
        "Weighs latency and energy together.",
        "power-profile-balanced-symbolic",
        w_latency=0.5, w_energy=0.5, w_load=0.3, w_residency=0.5),
    Mode.EFFICIENCY: ModeSpec(
        Mode.EFFICIENCY, "Efficiency",
        "Least energy per request, with backends above 60 W left out.",
        "power-profile-power-saver-symbolic",
        max_backend_watts=60.0, cap_waived_for_latency_critical=True,
        w_latency=0.1, w_energy=1.0, w_load=0.2, w_residency=0.5),
    Mode.QUIET: ModeSpec(
        Mode.QUIET, "Quiet",
        "Keeps fans and heat down: NPU, iGPU or CPU, the dGPU only when nothing else can serve.",
        "weather-clear-night-symbolic",
        allowed_hardware=frozenset({"npu", "igpu", "cpu"}), fallback_hardware=frozenset({"nvidia"}),
        max_temperature_c=70.0,
        w_latency=0.3, w_energy=0.6, w_load=0.3, w_residency=0.5),
    Mode.ULTRA_EFFICIENCY: ModeSpec(
        Mode.ULTRA_EFFICIENCY, "Ultra Efficiency",
        "NPU only (or the lowest-power backend without one), queueing rather than escalating.",
        "battery-level-10-symbolic",
        allowed_hardware=frozenset({"npu"}), fallback_hardware=_ALL - {"npu"}, lowest_power_only=True,
        queue_rather_than_escalate=True,
        w_latency=0.1, w_energy=1.0, w_load=0.2, w_residency=0.5),
    Mode.AUTO: ModeSpec(
        Mode.AUTO, "Auto",
        "Chooses a mode from power source, battery level, temperature and the time of day.",
        "emblem-synchronizing-symbolic"),
}


def mode_info(mode: Mode) -> dict[str, str]:
    """Display data for one mode, as the D-Bus `Modes` property and the management API give it."""
    spec = MODE_SPECS[parse_mode(mode)]
    return {"id": spec.mode.value, "label": spec.label, "description": spec.description, "icon": spec.icon}


# ---------------------------------------------------------------- Auto resolution

THERMAL_STATES = ("normal", "warm", "hot")
BATTERY_CRITICAL_PERCENT = 15.0
BATTERY_LOW_PERCENT = 40.0
DEFAULT_QUIET_HOURS = (22, 7)


@dataclass(frozen=True, slots=True)
class AutoInputs:
    on_battery: bool | None                  # None = unknown (no battery information)
    battery_percent: float | None            # None = unknown
    thermal: str                             # "normal" | "warm" | "hot" (hot = a thermal breaker open)
    hour: int                                # local hour 0-23: the clock of this decision
    quiet_hours: tuple[int, int] | None = DEFAULT_QUIET_HOURS   # start, end (wraps midnight); None = off


@dataclass(frozen=True, slots=True)
class AutoDecision:
    mode: Mode
    rule: str        # an `AutoRule.rule` id
    reason: str      # one human sentence


@dataclass(frozen=True, slots=True)
class AutoRule:
    rule: str
    mode: Mode
    condition: str                         # human text, for docs and GetAutoModeReasoning
    battery_at_most: float | None = None   # battery rules: on battery and level <= this


AUTO_RULES: tuple[AutoRule, ...] = (
    AutoRule("thermal-hot", Mode.QUIET, "a thermal breaker is open"),
    AutoRule("battery-critical", Mode.ULTRA_EFFICIENCY, f"on battery at or below {BATTERY_CRITICAL_PERCENT:g} %",
             BATTERY_CRITICAL_PERCENT),
    AutoRule("battery-low", Mode.EFFICIENCY, f"on battery at or below {BATTERY_LOW_PERCENT:g} %",
             BATTERY_LOW_PERCENT),
    AutoRule("quiet-hours", Mode.QUIET, "the local time is inside the quiet hours"),
    AutoRule("on-battery", Mode.BALANCED, "on battery"),
    AutoRule("ac-power", Mode.BALANCED, "on AC power"),
    AutoRule("default", Mode.BALANCED, "the power source is unknown"),
)
_RULES_BY_ID = {rule.rule: rule for rule in AUTO_RULES}


def in_quiet_hours(hour: int, quiet_hours: tuple[int, int] | None) -> bool:
    """Whether `hour` lies in [start, end), wrapping midnight when start > end; start == end means never."""
    if quiet_hours is None:
        return False
    start, end = quiet_hours
    if start <= end:
        return start <= hour < end
    return hour >= start or hour < end


def _validate(inputs: AutoInputs) -> None:
    if inputs.thermal not in THERMAL_STATES:
        raise ValueError(f"thermal must be one of {', '.join(THERMAL_STATES)}, got {inputs.thermal!r}")
    if not 0 <= inputs.hour <= 23:
        raise ValueError(f"hour must be 0-23, got {inputs.hour!r}")
    if inputs.quiet_hours is not None and not all(0 <= h <= 23 for h in inputs.quiet_hours):
        raise ValueError(f"quiet_hours must be two hours 0-23, got {inputs.quiet_hours!r}")


def _battery_limit(rule: AutoRule, previous: AutoDecision | None, hysteresis_percent: float) -> float:
    """The rule's threshold, raised by the hysteresis while it (or a stricter battery rule) is in force."""
    assert rule.battery_at_most is not None
    held = _RULES_BY_ID.get(previous.rule) if previous is not None else None
    if held is not None and held.battery_at_most is not None and held.battery_at_most <= rule.battery_at_most:
        return rule.battery_at_most + hysteresis_percent
    return rule.battery_at_most


def resolve_auto(inputs: AutoInputs, previous: AutoDecision | None = None, *,
                 hysteresis_percent: float = 5.0) -> AutoDecision:
    """The mode Auto stands for now: the first rule of `AUTO_RULES` that applies, with battery hysteresis."""
    _validate(inputs)
    percent = inputs.battery_percent
    for rule in AUTO_RULES:
        if rule.battery_at_most is not None:
            if inputs.on_battery is not True or percent is None:
                continue
            limit = _battery_limit(rule, previous, hysteresis_percent)
            if percent > limit:
                continue
            if percent <= rule.battery_at_most:
                reason = f"On battery at {percent:g} %, at or below {rule.battery_at_most:g} %."
            else:
                reason = f"On battery at {percent:g} %; staying until the level rises above {limit:g} %."
            return AutoDecision(rule.mode, rule.rule, reason)
        if rule.rule == "thermal-hot":
            if inputs.thermal == "hot":
                return AutoDecision(rule.mode, rule.rule, "A thermal breaker is open; keeping heat down.")
        elif rule.rule == "quiet-hours":
            if in_quiet_hours(inputs.hour, inputs.quiet_hours):
                start, end = inputs.quiet_hours  # type: ignore[misc]
                return AutoDecision(rule.mode, rule.rule,
                                    f"Quiet hours ({start:02d}:00-{end:02d}:00) are in force.")
        elif rule.rule == "on-battery":
            if inputs.on_battery is True:
                level = "level unknown" if percent is None else f"{percent:g} %"
                return AutoDecision(rule.mode, rule.rule, f"On battery ({level}).")
        elif rule.rule == "ac-power":
            if inputs.on_battery is False:
                return AutoDecision(rule.mode, rule.rule, "On AC power.")
        elif rule.rule == "default":
            return AutoDecision(rule.mode, rule.rule, "Power source unknown; using the balanced default.")
    raise AssertionError("AUTO_RULES ends with the 'default' rule, which always applies")
