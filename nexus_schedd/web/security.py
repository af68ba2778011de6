"""Who may press the dashboard's buttons: authentication and CSRF protection.

Reading is open to whoever can reach the listen address (127.0.0.1 by default).
Actions (pause, resume, trigger, cancel) are refused unless the config enables
them, and then a POST needs both:

* authentication: ``Authorization: Bearer TOKEN``, or the cookie the login form
  sets (an HMAC of the session id keyed by the token, so it is worthless for
  another session and dies when the token changes), or, when
  ``trust_proxy_header`` is set, a non-empty value of that header;
* CSRF protection: the session's CSRF token (an HMAC of the session cookie under
  a per-process key) in the ``csrf`` form field or the ``X-CSRF-Token`` header,
  and an ``Origin`` (or, without one, ``Referer``) of this very site.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request

from nexus_schedd.web.config import WebConfig

SESSION_COOKIE = "nexus_session"
AUTH_COOKIE = "nexus_auth"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of a check: ``ok``, else the HTTP status and a reason to show."""

    ok: bool
    status: int = 200
    reason: str = ""


ALLOWED = Verdict(True)


class Guard:
    """Checks requests against one dashboard's config and per-process secret."""

    def __init__(self, config: WebConfig, secret: bytes | None = None) -> None:
        self.config = config
        self._secret = secret or secrets.token_bytes(32)

    @staticmethod
    def new_session_id() -> str:
        """A fresh, unguessable session id for the session cookie."""
        return secrets.token_urlsafe(24)

    def csrf_token(self, session_id: str) -> str:
        """The CSRF token that belongs to ``session_id``."""
        return hmac.new(self._secret, f"csrf:{session_id}".encode(), hashlib.sha256).hexdigest()

    def auth_cookie(self, session_id: str) -> str:
        """The value of the login cookie for ``session_id`` (needs a configured token)."""
        token = self.config.token or ""
        return hmac.new(token.encode(), f"auth:{session_id}".encode(), hashlib.sha256).hexdigest()

    def token_matches(self, candidate: str) -> bool:
        """Constant-time comparison with the configured token."""
        token = self.config.token
        return bool(token) and hmac.compare_digest(candidate.encode(), (token or "").encode())

    def user(self, request: Request) -> str | None:
        """Who the request is authenticated as, or None."""
        header = self.config.trust_proxy_header
        if header:
            value = request.headers.get(header, "").strip()
            if value:
                return value
        if self.config.token:
            scheme, _, credential = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() == "bearer" and self.token_matches(credential.strip()):
                return "token"
            session_id = request.cookies.get(SESSION_COOKIE, "")
            cookie = request.cookies.get(AUTH_COOKIE, "")
            if (
                session_id
                and cookie
                and hmac.compare_digest(cookie.encode(), self.auth_cookie(session_id).encode())
            ):
                return "token"
        return None

    def check_action(self, request: Request, submitted_csrf: str) -> Verdict:
        """May this POST run an action? Disabled 403, unauthenticated 401, CSRF 403."""
        if not self.config.actions_enabled:
            return Verdict(False, 403, "Actions are disabled in this dashboard's configuration.")
        if self.user(request) is None:
            return Verdict(False, 401, "Log in (or send a bearer token) to use actions.")
        return self.check_csrf(request, submitted_csrf)

    def check_csrf(self, request: Request, submitted_csrf: str) -> Verdict:
        """Same-origin request carrying the session's CSRF token."""
        if not self.same_origin(request):
            return Verdict(False, 403, "The request did not come from this dashboard's own pages.")
        session_id = request.cookies.get(SESSION_COOKIE, "")
        submitted = submitted_csrf or request.headers.get(CSRF_HEADER, "")
        if not session_id or not submitted:
            return Verdict(False, 403, "The form's CSRF token is missing; reload the page.")
        if not hmac.compare_digest(submitted.encode(), self.csrf_token(session_id).encode()):
            return Verdict(False, 403, "The form's CSRF token is not valid; reload the page.")
        return ALLOWED

    def same_origin(self, request: Request) -> bool:
        """True when Origin (else Referer) names this site; a request with neither fails."""
        origin = request.headers.get("origin")
        if origin is None or origin == "null":
            referer = request.headers.get("referer")
            if not referer:
                return False
            parts = urlsplit(referer)
            origin = f"{parts.scheme}://{parts.netloc}"
        return origin.lower() in self._own_origins(request)

    def _own_origins(self, request: Request) -> set[str]:
        host = request.headers.get("host", "")
        scheme = request.url.scheme
        origins = {f"{scheme}://{host}".lower()}
        if self.config.trust_proxy_header:
            # Behind the trusted proxy the browser sees the proxy's scheme and host.
            forwarded_host = request.headers.get("x-forwarded-host", host).split(",")[0].strip()
            forwarded_proto = request.headers.get("x-forwarded-proto", scheme).split(",")[0]
            origins.add(f"{forwarded_proto.strip()}://{forwarded_host}".lower())
        return origins
