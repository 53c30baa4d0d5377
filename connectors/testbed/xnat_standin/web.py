"""Tiny WSGI plumbing for the stand-in: a request object, answers, a route table, faults."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs


@dataclass
class Request:
    environ: dict[str, Any]
    method: str
    path: str
    params: dict[str, list[str]]
    user: str | None = None
    args: dict[str, str] = field(default_factory=dict)

    def param(self, name: str, default: str | None = None) -> str | None:
        values = self.params.get(name)
        return values[0] if values else default

    def header(self, name: str) -> str:
        return str(self.environ.get("HTTP_" + name.upper().replace("-", "_"), ""))

    @property
    def content_type(self) -> str:
        return str(self.environ.get("CONTENT_TYPE", "")).split(";")[0].strip().lower()

    def cookie(self, name: str) -> str | None:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(self.header("cookie"))
        except Exception:
            return None
        morsel = jar.get(name)
        return morsel.value if morsel else None

    def basic_auth(self) -> tuple[str, str] | None:
        value = self.header("authorization")
        if not value.lower().startswith("basic "):
            return None
        try:
            user, _, password = base64.b64decode(value[6:]).decode("utf-8").partition(":")
        except ValueError:
            return None
        return user, password

    def read_form(self) -> dict[str, list[str]]:
        length = int(self.environ.get("CONTENT_LENGTH") or 0)
        body = self.environ["wsgi.input"].read(length) if length else b""
        return parse_qs(body.decode("utf-8", "replace"))

    def read_json(self) -> Any:
        length = int(self.environ.get("CONTENT_LENGTH") or 0)
        body = self.environ["wsgi.input"].read(length) if length else b""
        return json.loads(body or b"null")


@dataclass
class Answer:
    status: int
    body: bytes = b""
    content_type: str = "text/plain"
    headers: list[tuple[str, str]] = field(default_factory=list)


def text(status: int, body: str, content_type: str = "text/plain") -> Answer:
    return Answer(status, body.encode("utf-8"), content_type)


def as_json(payload: Any, status: int = 200) -> Answer:
    return Answer(status, json.dumps(payload).encode("utf-8"), "application/json")


def error(status: int, message: str) -> Answer:
    """Restlet error pages are HTML; never used with a 2xx."""
    reason = HTTPStatus(status).phrase
    html = f"<html><head><title>Status page</title></head><body><h3>{message}</h3>"
    html += f"<p>{reason}</p></body></html>"
    return Answer(status, html.encode("utf-8"), "text/html")


def result_set(
    rows: list[dict[str, str]],
    total: int | None = None,
    title: str = "",
    fmt: str | None = None,
    counted: bool = True,
) -> Answer:
    """A listing in the representation ``format=`` asks: json (the ResultSet), csv (a header
    row, every value quoted), xml (an XFTTable document) or html (a table). XNAT's restlets
    render every listing table in these four (xnat-web restlet/resources/SecureResource, its
    table representations chosen by ``format``; the XML layout here is ours, only its rows
    and columns are XNAT's). ``counted=False``: no ``totalRecords`` (a page of a paged listing:
    ProjSubExptList and ExperimentListResource put it in only when no page was asked for)."""
    fmt = (fmt or "json").lower()
    if fmt in ("csv", "xml", "html"):
        return _table(rows, total if counted else None, fmt, counted)
    rs: dict[str, Any] = {"Result": rows}
    if counted:
        rs["totalRecords"] = str(len(rows) if total is None else total)
    if title:
        rs["title"] = title
    return as_json({"ResultSet": rs})


def _table(rows: list[dict[str, str]], total: int | None, fmt: str, counted: bool) -> Answer:
    columns = list(rows[0]) if rows else []
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([r.get(c, "") for c in columns] for r in rows)
        return Answer(200, out.getvalue().encode("utf-8"), "text/csv")
    esc = html.escape
    if fmt == "xml":
        head = "".join(f"<column>{esc(c)}</column>" for c in columns)
        body = "".join(
            "<row>" + "".join(f"<cell>{esc(str(r.get(c, '')))}</cell>" for c in columns) + "</row>"
            for r in rows
        )
        count = f' totalRecords="{len(rows) if total is None else total}"' if counted else ""
        doc = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<ResultSet{count}>"
            f"<results><columns>{head}</columns><rows>{body}</rows></results></ResultSet>"
        )
        return Answer(200, doc.encode("utf-8"), "text/xml")
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(str(r.get(c, '')))}</td>" for c in columns) + "</tr>"
        for r in rows
    )
    page = f"<html><body><table><tr>{head}</tr>{body}</table></body></html>"
    return Answer(200, page.encode("utf-8"), "text/html")


Handler = Callable[[Request], Answer]


class Router:
    def __init__(self) -> None:
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def add(self, methods: str, pattern: str, handler: Handler) -> None:
        regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "/?$")
        for m in methods.split(","):
            self.routes.append((m, regex, handler))

    def find(self, method: str, path: str) -> tuple[Handler | None, dict[str, str], bool]:
        path_known = False
        for m, regex, handler in self.routes:
            match = regex.match(path)
            if match:
                path_known = True
                if m == method:
                    return handler, match.groupdict(), True
        return None, {}, path_known


@dataclass
class Faults:
    """Switches a test flips to make the stand-in misbehave the way a real XNAT can."""

    fail_status: int = 0  # answer this status ...
    fail_count: int = 0  # ... to the next N requests ...
    fail_path: str = ""  # ... whose path starts with this (and that are not auth/connect)
    delay_seconds: float = 0.0
    delay_path: str = ""
    delay_after: int = 0  # ... once this many matching requests went by undelayed
    unauthorized_after: int | None = None  # every request after N more is refused with 401
    dqr_stuck: bool = False  # DQR requests stop at ISSUED and nothing arrives
    drop_files: int = 0  # sessions are archived with this many fewer files than sent
    ignore_paging: bool = False  # listings ignore limit/offset whatever the version says
    requests_seen: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def fail_next(self, status: int, count: int = 1, path: str = "") -> None:
        with self.lock:
            self.fail_status, self.fail_count, self.fail_path = status, count, path

    def slow(self, seconds: float, path: str = "", after: int = 0) -> None:
        with self.lock:
            self.delay_seconds, self.delay_path, self.delay_after = seconds, path, after

    def reset(self) -> None:
        with self.lock:
            self.fail_status = self.fail_count = self.drop_files = 0
            self.fail_path = self.delay_path = ""
            self.delay_seconds = 0.0
            self.delay_after = 0
            self.unauthorized_after = None
            self.dqr_stuck = False

    def before(self, req: Request) -> Answer | None:
        """A fault answer for this request, or None to serve it normally."""
        with self.lock:
            self.requests_seen += 1
            if self.unauthorized_after is not None:
                if self.unauthorized_after <= 0:
                    return _unauthorized()
                self.unauthorized_after -= 1
            hit = (
                self.fail_count > 0
                and req.path.startswith(self.fail_path)
                and not req.path.startswith(("/data/JSESSION", "/data/services/auth"))
            )
            status = self.fail_status
            if hit:
                self.fail_count -= 1
            delay = 0.0
            if self.delay_seconds and req.path.startswith(self.delay_path):
                if self.delay_after > 0:
                    self.delay_after -= 1
                else:
                    delay = self.delay_seconds
        if delay:
            time.sleep(delay)
        if hit:
            return error(status, "Internal Server Error (fault switched on by the test)")
        return None


def _unauthorized(realm: str = "XNAT") -> Answer:
    ans = error(401, "Unauthorized")
    ans.headers.append(("WWW-Authenticate", f'Basic realm="{realm}"'))
    return ans


unauthorized = _unauthorized


def respond(start_response: Callable[..., Any], ans: Answer) -> Iterable[bytes]:
    reason = HTTPStatus(ans.status).phrase
    headers = [("Content-Type", ans.content_type), ("Content-Length", str(len(ans.body)))]
    start_response(f"{ans.status} {reason}", headers + ans.headers)
    return [ans.body]
