"""Decode NVIDIA clock-event ("throttle") reason bitmasks, bit by bit, into names and a throttling verdict.

Bits from nvml.h (`nvmlClocksEventReason*`). Idle, application-clock and display-clock settings
and sync boost lower clocks by choice or configuration, not because of power or heat, so they are
named but are not "throttling". Every other known bit is. An unknown bit is named
"unknown:0x..." and counts as throttling: a reason we cannot read is not taken as fine.
"""

from __future__ import annotations

REASON_BITS: tuple[tuple[int, str, bool], ...] = (
    # bit, name, counts as throttling
    (0x0001, "gpu_idle", False),
    (0x0002, "applications_clocks_setting", False),
    (0x0004, "sw_power_cap", True),
    (0x0008, "hw_slowdown", True),
    (0x0010, "sync_boost", False),
    (0x0020, "sw_thermal_slowdown", True),
    (0x0040, "hw_thermal_slowdown", True),
    (0x0080, "hw_power_brake_slowdown", True),
    (0x0100, "display_clock_setting", False),
    (0x0200, "board_limit", True),
    (0x0400, "reliability", True),
)
_KNOWN = {bit: (name, throttling) for bit, name, throttling in REASON_BITS}


def decode_throttle_reasons(mask: int) -> tuple[tuple[str, ...], bool]:
    """(names of the set bits in bit order, whether any of them is real throttling)."""
    names: list[str] = []
    throttling = False
    bit = 1
    remaining = int(mask)
    if remaining < 0:
        raise ValueError(f"throttle reason mask must be non-negative, got {mask}")
    while remaining:
        if remaining & bit:
            name, counts = _KNOWN.get(bit, (f"unknown:{bit:#x}", True))
            names.append(name)
            throttling = throttling or counts
            remaining &= ~bit
        bit <<= 1
    return tuple(names), throttling
