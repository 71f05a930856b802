"""A browser's side of the console, over httpx: log in, read a form's CSRF token, post forms."""

from __future__ import annotations

import re

import httpx

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
LOGIN_TOKEN = re.compile(r'name="token" value="([^"]+)"')


async def log_in(client: httpx.AsyncClient, credential: str) -> httpx.Response:
    """Fetch the login form, send ``credential`` with its token, and return the answer."""
    form = await client.get("/console/login")
    token = LOGIN_TOKEN.search(form.text)
    assert token is not None, form.text
    return await client.post("/console/login", data={"token": token[1], "credential": credential})


def csrf_of(page: httpx.Response) -> str:
    """Return the CSRF token a page's forms carry."""
    found = CSRF.search(page.text)
    assert found is not None, page.text
    return found[1]
