"""Helpers shared by the server tests."""

from __future__ import annotations

import asyncio


async def wait_for(api, path, pred, timeout=60):
    """GET ``path`` until ``pred(status, body)``; the body then, or AssertionError after ``timeout`` s."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status, body, _ = await api("GET", path)
        if pred(status, body):
            return body
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{path}: still {status} {body}")
        await asyncio.sleep(0.2)
