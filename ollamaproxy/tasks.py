"""Background task helpers: cancel a group of tasks and wait for them, keeping real failures."""

from __future__ import annotations

import asyncio


async def cancel_and_wait(tasks: list[asyncio.Task]) -> list[BaseException]:
    """Cancel every task, wait for all of them, and return the errors other than cancellation."""
    for task in tasks:
        task.cancel()
    errors: list[BaseException] = []
    for task in tasks:
        try:
            await task
        except asyncio.CancelledError:
            pass
        except Exception as error:  # noqa: BLE001 - reported to the caller, who decides
            errors.append(error)
    tasks.clear()
    return errors
