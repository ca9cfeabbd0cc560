"""Signing in through the console's login page (Playwright), as a person does."""

from __future__ import annotations

from typing import Any

from playwright.async_api import expect


async def sign_in(page: Any, address: str, name: str, password: str) -> None:
    """Open `address`, sign in on the login form, wait for the signed-in page."""
    await page.goto(address)
    await expect(page.locator("#login")).to_be_visible()
    await page.fill("#login-name", name)
    await page.fill("#login-password", password)
    await page.click("#login-submit")
    await expect(page.locator("#sign-out")).to_be_visible()
