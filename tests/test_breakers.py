"""Breaker state machines: hysteresis, stale telemetry, manual pause, the board's answers (pure, injected time)."""

from ollamaproxy.policy.breakers import (
    BreakerBoard,
    DeviceSample,
    ManualBreaker,
    PowerBudgetBreaker,
    ReasonCode,
    StaleBreaker,
    ThermalBreaker,
)


def test_power_budget_opens_at_budget_and_closes_below_resume_ratio():
    breaker = PowerBudgetBreaker(350, 0.9)
    assert breaker.update(340, 0) is None
    opened = breaker.update(351, 1)
    assert opened.opened and opened.code is ReasonCode.POWER_BUDGET and "350 W budget" in opened.reason
    # Hysteresis: hovering between 315 and 350 W does not flap.
    for watts in (349, 330, 316, 345, 320):
        assert breaker.update(watts, 2) is None and breaker.open
    closed = breaker.update(314, 3)
    assert closed is not None and not closed.opened and not breaker.open
    assert breaker.update(340, 4) is None  # below budget again: stays closed
    assert breaker.update(None, 5) is None


def test_thermal_pause_and_resume_with_hysteresis():
    breaker = ThermalBreaker("nvidia:0", 82, 75)
    assert breaker.update(81.9, 0) is None
    assert breaker.update(82, 1).opened
    assert breaker.update(78, 2) is None and breaker.open
    assert breaker.update(75, 3).opened is False


def test_stale_breaker_opens_after_age_and_on_failure_and_recovers():
    breaker = StaleBreaker("nvidia:0", 5.0)
    assert breaker.update(10.0, None, 10.0) is None
    assert breaker.update(None, "NVML timed out", 12.0) is None  # failed, but the last reading is 2 s old
    opened = breaker.update(None, "NVML timed out", 15.5)
    assert opened.opened and "source failed: NVML timed out" in opened.reason
    closed = breaker.update(16.0, None, 16.0)
    assert closed is not None and not closed.opened
    assert breaker.expire(20.0) is None
    assert breaker.expire(21.1).opened  # sampler hung: no snapshot arrives at all


def test_stale_breaker_never_read_and_failing_is_unsafe():
    breaker = StaleBreaker("nvidia:0", 5.0)
    assert breaker.update(None, "NVML missing", 0.0).opened


def test_manual_breaker_pause_resume():
    breaker = ManualBreaker("global")
    assert breaker.pause("maintenance", 0).opened
    assert breaker.pause("again", 1) is None and breaker.reason == "again"
    assert not breaker.resume(2).opened


def _board(**kw):
    kw.setdefault("budget_watts", 350)
    return BreakerBoard(resume_ratio=0.9, pause_celsius=82, resume_celsius=75, stale_seconds=5,
                        backend_devices={"gpu0": ["nvidia:0"], "gpu1": ["nvidia:1"], "npu": []}, **kw)


def test_board_hot_device_blocks_only_its_backends():
    board = _board()
    transitions = board.observe(200, [DeviceSample("nvidia:0", 0.0, 90), DeviceSample("nvidia:1", 0.0, 60)], 0.0)
    assert [(t.breaker, t.subject, t.opened) for t in transitions] == [("thermal", "nvidia:0", True)]
    assert board.blocked("gpu0")[0] is ReasonCode.THERMAL
    assert board.blocked("gpu1") is None and board.blocked("npu") is None
    assert board.degraded_codes() == ["thermal"]


def test_board_power_budget_blocks_everything_until_draw_falls():
    board = _board()
    board.observe(400, [DeviceSample("nvidia:0", 0.0, 60)], 0.0)
    assert all(board.blocked(b)[0] is ReasonCode.POWER_BUDGET for b in ("gpu0", "gpu1", "npu"))
    board.observe(330, [DeviceSample("nvidia:0", 1.0, 60)], 1.0)
    assert board.blocked("npu") is not None
    board.observe(300, [DeviceSample("nvidia:0", 2.0, 60)], 2.0)
    assert board.blocked("npu") is None


def test_board_expected_devices_go_stale_when_silent():
    board = _board(budget_watts=None)
    board.expect(["nvidia:0", "nvidia:1"], now=0.0)
    board.observe(None, [DeviceSample("nvidia:0", 4.0, 60)], 4.0)
    assert board.tick(4.9) == []
    stale = board.tick(5.5)
    assert [(t.subject, t.code) for t in stale] == [("nvidia:1", ReasonCode.TELEMETRY_STALE)]
    assert board.blocked("gpu1")[0] is ReasonCode.TELEMETRY_STALE and board.blocked("gpu0") is None


def test_board_manual_pause_global_and_per_backend():
    board = _board()
    board.pause("gpu0", "swap in progress", 0)
    assert board.blocked("gpu0") == (ReasonCode.PAUSED, "swap in progress") and board.blocked("gpu1") is None
    board.pause(None, "", 1)
    assert board.blocked("gpu1")[0] is ReasonCode.PAUSED
    board.resume(None, 2)
    board.resume("gpu0", 3)
    assert board.blocked("gpu0") is None and board.open_breakers() == []
