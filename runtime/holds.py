"""Answers held back on purpose (a failed login's tarpit, a throttled login's 429), a bounded number
at once: past the bound an answer goes at once, so holding can never pile up tasks without end."""

from __future__ import annotations

import asyncio


class BoundedHolds:
    """Holds of at most ``limit`` answers at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    async def hold(self, seconds: float) -> None:
        """Wait ``seconds`` (nothing when ``limit`` answers are held already, or ``seconds`` <= 0)."""
        if seconds <= 0 or self.held >= self.limit:
            return
        self.held += 1
        try:
            await asyncio.sleep(seconds)
        finally:
            self.held -= 1
