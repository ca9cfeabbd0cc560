"""The console in its users' language: the page, the JavaScript's catalog, the API's errors.

A request's language is, in order: the header selector's choice (cookie `isoedge_lang`), the
signed-in user's `language`, the site's `web.language`, the browser's `Accept-Language`, English.
Errors keep their machine `code` (and, for a refused signature, its `refusal`; for a desk's
refusal, its `message`: the text's code and parameters); only `error`, the sentence a person
reads, is translated (a desk's refusal rendered by `agent.core.messages.render`, times in the
site's zone).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, NoReturn

from aiohttp import web
from aiohttp.typedefs import Middleware

from agent.console.auth import PRINCIPAL_KEY, Principal
from agent.core.i18n import (
    Language,
    catalog_json,
    choose,
    gettext,
    negotiate,
    render_page,
)
from agent.core.messages import Message, render

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from agent.console.settings import WebSection

LANG_COOKIE = "isoedge_lang"
_FIRST_ERROR_STATUS = 400
# Placeholders that carry a code with a translation (a role, a state); others are data.
_CODE_PARAMS = frozenset({"role", "state", "result", "meaning"})
LANG_KEY: web.RequestKey[str] = web.RequestKey("isoedge_lang", str)
SECTION_KEY: web.RequestKey[Any] = web.RequestKey("isoedge_web_section", object)
# On public paths (the page itself) nobody is authenticated: who a session cookie belongs to.
SESSION_USER_KEY: web.AppKey[Any] = web.AppKey("isoedge_session_user", object)
# The site's zone (a `ZoneInfo`), for the times in refusals; UTC (with its name) if not set.
ZONE_KEY: web.AppKey[Any] = web.AppKey("isoedge_site_zone", object)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def fail(message: str | Message, status: type[web.HTTPException] = web.HTTPBadRequest, *,
         code: str | None = None, fields: dict[str, Any] | None = None,
         **params: Any) -> NoReturn:  # fmt: skip
    """Answer with a JSON error, translated on the way out (`code` stays machine-readable).

    `message` is an English catalog id whose `{name}` placeholders `params` fill in, or a
    `Message` (a refusal from a desk: its code and parameters, rendered by `messages.render`).
    """
    if code is None:
        code = HTTPStatus(status.status_code).phrase.lower().replace(" ", "_")
    marker: dict[str, Any]
    if isinstance(message, Message):
        text = str(message)
        marker = {"message": message.as_data()}
    else:
        text = message.format(**params) if params else message
        marker = {"_i18n": [message, {k: str(v) for k, v in params.items()}]}
    body: dict[str, Any] = {"error": text, "code": code, **(fields or {}), **marker}
    raise status(text=json.dumps(body), content_type="application/json")


def language_for(request: web.Request, section: WebSection) -> Language:
    """The language of `request` (see the module's docstring for the order)."""
    chosen = request.cookies.get(LANG_COOKIE)
    principal = request.get(PRINCIPAL_KEY)
    user_lang = None
    name = principal.name if isinstance(principal, Principal) and principal.authenticated \
        else None
    if name is None:
        session_user = request.app.get(SESSION_USER_KEY)
        name = session_user(request) if session_user is not None else None
    if name:
        user = next((u for u in section.users if u.name == name), None)
        user_lang = user.language if user is not None else None
    return choose(chosen, user_lang, section.language,
                  negotiate(request.headers.get("Accept-Language")))


def language_of(request: web.Request) -> Language:
    """The language of `request` (its signed-in user's, once the user is known)."""
    section = request.get(SECTION_KEY)
    if section is not None:
        return language_for(request, section)
    return choose(request.get(LANG_KEY))


def _translate_error(body: dict[str, Any], lang: str,
                     zone: ZoneInfo | None = None) -> dict[str, Any]:
    message = body.get("message")
    marker = body.pop("_i18n", None)
    if isinstance(message, dict) and isinstance(message.get("code"), str):
        body["error"] = render(message, lang, zone)
    elif isinstance(marker, list) and len(marker) == 2 and isinstance(marker[0], str):  # noqa: PLR2004 - [id, params]
        params = marker[1] if isinstance(marker[1], dict) else {}
        translated_params = {k: gettext(lang, v) if k in _CODE_PARAMS and isinstance(v, str)
                             else v for k, v in params.items()}
        try:
            body["error"] = gettext(lang, marker[0]).format(**translated_params)
        except (KeyError, IndexError, ValueError):
            body["error"] = marker[0].format(**params)
    elif isinstance(body.get("error"), str):
        body["error"] = gettext(lang, body["error"])  # a fixed sentence from below the console
    return body


def middleware(section: WebSection) -> Middleware:
    """Chooses each request's language and translates the JSON errors it is answered with."""

    @web.middleware
    async def i18n_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        request[LANG_KEY] = choose(request.cookies.get(LANG_COOKIE), section.language,
                                   negotiate(request.headers.get("Accept-Language")))
        request[SECTION_KEY] = section
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = exc
        if response.status >= _FIRST_ERROR_STATUS and isinstance(response, web.Response) and \
                response.content_type == "application/json" and response.body is not None:
            lang = language_for(request, section)
            raw = response.body
            try:
                body = json.loads(raw) if isinstance(raw, (bytes, bytearray)) else None
            except ValueError:
                body = None
            if isinstance(body, dict):
                zone = request.app.get(ZONE_KEY)
                response.text = json.dumps(_translate_error(body, lang, zone), ensure_ascii=False)
                response.content_type = "application/json"
        if isinstance(response, web.HTTPException):
            raise response
        return response

    return i18n_middleware


__all__ = ["LANG_COOKIE", "ZONE_KEY", "catalog_json", "fail", "language_for", "language_of",
           "middleware", "render_page"]
