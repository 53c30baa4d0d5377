"""The stand-in XNAT as a WSGI app: auth, the endpoints xnatpy needs to connect, listings and
item documents (``xnat-rest-contract.md`` §§1-5). Import/prearchive live in ``archive.py``,
the DQR plugin in ``dqr.py``."""

from __future__ import annotations

import collections
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from connectors.testbed.xnat_standin import archive, dqr, listing
from connectors.testbed.xnat_standin.importer import drain
from connectors.testbed.xnat_standin.store import Store
from connectors.testbed.xnat_standin.web import (
    Answer,
    Faults,
    Request,
    Router,
    as_json,
    error,
    respond,
    result_set,
    text,
    unauthorized,
)

logger = logging.getLogger(__name__)

OPEN_PATHS = ("/", "/data/services/auth", "/data/version")
SCHEMAS = ("xnat", "xdat")
BUILD_INFO = {
    "version": "1.8.10",
    "buildNumber": "standin",
    "buildDate": "2024-01-01",
    "commit": "standin",
    "sha": "standin",
}


class XnatApp:
    """One stand-in server's behaviour and state. ``users`` maps user name to password."""

    def __init__(
        self,
        users: dict[str, str],
        projects: Iterable[str] = ("HNC",),
        pacs: list[dict[str, Any]] | None = None,
        archive_seconds_per_file: float = archive.REAL_SECONDS_PER_FILE / 50,
        version: str = "1.8.10",
    ) -> None:
        self.version = version
        self.users = dict(users)
        self.store = Store()
        for p in projects:
            self.store.add_project(p)
        self.faults = Faults()
        self.jsessions: dict[str, str] = {}
        # Session expiry: XNAT drops an HTTP session idle for longer than its sessionTimeout
        # (xnat-web SiteConfigPreferences.getSessionTimeout, "15 minutes" by default), and
        # /data/** then answers 401 to its JSESSIONID (xnatpy keeps only that cookie:
        # xnat.utils.JSessionAuth). The stand-in expires a session by age, used or not (the
        # harsher reading); None: never.
        self.session_seconds: float | None = None
        self.session_started: dict[str, float] = {}
        self.logins = 0  # sessions opened (logins), for tests
        self._lock = threading.Lock()
        # (method, path, status) of the latest requests, for tests; bounded for `demo serve`
        self.request_log: collections.deque[tuple[str, str, int]] = collections.deque(
            maxlen=100_000
        )
        self.in_flight: dict[str, int] = {}  # path -> requests being served now
        self.peak_in_flight: dict[str, int] = {}  # path -> most served at once, for tests
        self.dqr = dqr.DqrPlugin(self.store, self.faults, pacs or [])
        self.router = Router()
        r = self.router
        # Login and the calls xnatpy makes to connect: JSESSION (xnat-web JSESSIONResource),
        # PUT/POST /data/services/auth (the auth service xnatpy's connect uses; a refused
        # login is 401), /xapi/siteConfig/buildInfo (SiteConfigApi), /xapi/schemas (the
        # schemas xnatpy builds its classes from), /data/search/elements
        # (search/SearchElementListResource). /data/version is gone since 1.7: 404.
        r.add("GET", "/", lambda q: text(200, "XNAT stand-in"))
        r.add("GET,POST", "/data/JSESSION", self.jsession)
        r.add("DELETE", "/data/JSESSION", self.logout)
        r.add("PUT,POST", "/data/services/auth", self.login)
        r.add("GET", "/data/auth", lambda q: text(200, f"User '{q.user}' is logged in."))
        r.add("GET", "/data/version", lambda q: error(404, "Not Found"))
        # the version profile: xnat-web SiteConfigApi /siteConfig/buildInfo (what xnatpy and
        # the client read); it decides whether listings page (listing.pages)
        r.add("GET", "/xapi/siteConfig/buildInfo", lambda q: as_json(self.build_info()))
        r.add("GET", "/xapi/schemas", lambda q: as_json(list(SCHEMAS)))
        r.add("GET", "/xapi/schemas/{name}", self.schema)
        r.add("GET", "/data/search/elements", lambda q: result_set([], title="Data-Types"))
        r.add("GET", "/data/search/elements/{xsi}", lambda q: result_set([]))
        r.add("GET", "/data/services/tokens/issue", self.token)
        # a user's groups ({project}_owner|member|collaborator) and roles (xnat-web UsersApi)
        r.add(
            "GET",
            "/xapi/users/{u}/groups",
            lambda q: as_json(
                [f"{p}_owner" for p in self.store.projects] if q.args["u"] == q.user else []
            ),
        )
        r.add("GET", "/xapi/users/{u}/roles", lambda q: as_json([]))
        listing.register(
            r, self.store, lambda: listing.pages(self.version) and not self.faults.ignore_paging
        )
        self.archive = archive.register(r, self.store, self.faults, archive_seconds_per_file)
        self.dqr.register(r)

    # ------------------------------------------------------------------ WSGI entry point

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/") or "/"
        if path.startswith("/data/archive/"):
            path = "/data/" + path[len("/data/archive/") :]
        req = Request(
            environ=environ,
            method=environ["REQUEST_METHOD"].upper(),
            path=path,
            params=parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True),
        )
        with self._lock:
            self.in_flight[path] = self.in_flight.get(path, 0) + 1
            self.peak_in_flight[path] = max(self.peak_in_flight.get(path, 0), self.in_flight[path])
        try:
            ans = self.handle(req)
        finally:
            with self._lock:
                self.in_flight[path] -= 1
        with self._lock:
            self.request_log.append((req.method, path, ans.status))
        return respond(start_response, ans)

    def handle(self, req: Request) -> Answer:
        new_cookie = None
        if req.path not in OPEN_PATHS:
            req.user, new_cookie = self.authenticate(req)
            if req.user is None:
                drain(req.environ)
                return unauthorized()
        fault = self.faults.before(req)
        if fault is not None:
            drain(req.environ)
            return fault
        handler, args, path_known = self.router.find(req.method, req.path)
        if handler is None:
            drain(req.environ)
            return error(405 if path_known else 404, f"{req.path} not found.")
        req.args = args
        try:
            ans = handler(req)
        except Exception as e:
            logger.exception("stand-in XNAT: %s %s failed", req.method, req.path)
            ans = error(500, f"Internal Server Error: {type(e).__name__}")
        if new_cookie and not any(h[0] == "Set-Cookie" for h in ans.headers):
            ans.headers.append(("Set-Cookie", f"JSESSIONID={new_cookie}; Path=/; HttpOnly"))
        return ans

    def authenticate(self, req: Request) -> tuple[str | None, str | None]:
        """(user, new session id): the JSESSIONID cookie, else Basic auth (which opens one)."""
        sid = req.cookie("JSESSIONID")
        with self._lock:
            if sid and sid in self.jsessions and self._expired(sid):
                self.jsessions.pop(sid, None)
            if sid and sid in self.jsessions:
                return self.jsessions[sid], None
        basic = req.basic_auth()
        if basic and self.users.get(basic[0]) == basic[1]:
            return basic[0], self.new_session(basic[0])
        return None, None

    def _expired(self, sid: str) -> bool:
        limit = self.session_seconds
        started = self.session_started.get(sid, time.monotonic())
        return limit is not None and time.monotonic() - started > limit

    def new_session(self, user: str) -> str:
        sid = secrets.token_hex(16).upper()
        with self._lock:
            self.jsessions[sid] = user
            self.session_started[sid] = time.monotonic()
            self.logins += 1
        return sid

    # ------------------------------------------------------------------ handlers

    def build_info(self) -> dict[str, str]:
        return {**BUILD_INFO, "version": self.version}

    def jsession(self, req: Request) -> Answer:
        sid = req.cookie("JSESSIONID")
        with self._lock:
            known = sid in self.jsessions and not self._expired(sid) if sid else False
        if not known:
            sid = self.new_session(req.user or "")
        ans = text(200, str(sid))
        ans.headers.append(("Set-Cookie", f"JSESSIONID={sid}; Path=/; HttpOnly"))
        return ans

    def logout(self, req: Request) -> Answer:
        sid = req.cookie("JSESSIONID")
        with self._lock:
            self.jsessions.pop(sid or "", None)
        return text(200, "")

    def login(self, req: Request) -> Answer:
        form = req.read_form()
        user = (form.get("username") or form.get("j_username") or [""])[0]
        password = (form.get("password") or form.get("j_password") or [""])[0]
        if not user or self.users.get(user) != password:
            return error(401, "Authentication failed.")
        sid = self.new_session(user)
        ans = text(200, sid)
        ans.headers.append(("Set-Cookie", f"JSESSIONID={sid}; Path=/; HttpOnly"))
        return ans

    def schema(self, req: Request) -> Answer:
        name = req.args["name"]
        if name not in SCHEMAS:
            return error(404, f"schema {name} not found")
        data = resources.files(__package__).joinpath(f"schemas/{name}.xsd").read_bytes()
        return Answer(200, data, "application/xml")

    def token(self, req: Request) -> Answer:
        return as_json(
            {
                "alias": secrets.token_hex(8),
                "secret": secrets.token_hex(16),
                "xdatUserId": req.user,
                "singleUse": False,
                "enabled": True,
            }
        )
