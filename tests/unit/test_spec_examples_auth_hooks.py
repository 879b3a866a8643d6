"""The "Event hooks" and "Authentication" examples of advanced-features, run as printed.

Each example below is the specification's text, unchanged. It is compiled
with top-level ``await`` allowed and run in a namespace where
`hyperhttp.Client` builds its clients on a `MockTransport`: the example
hosts (api.example.com, legacy.example.com, ...) are answered locally and
nothing leaves the process. Names the examples leave undefined
(`new_trace_id`, `SECRET_KEY`, `compute`, `my_new_hook`, `client`, and
`hyperhttp` where the page imported it earlier) are supplied minimally. After each run the test checks what the mock server
received, so an example that "runs" but sends the wrong thing fails.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import datetime
import hashlib
import hmac
import re
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

import pytest

import hyperhttp
from hyperhttp import Request, Response
from tests.support.digest_server import DigestServerApp

# --- the examples, verbatim -----------------------------------------------------------

EVENT_HOOKS = '''
import time
import hyperhttp

async def log_request(request):
    request._start = time.monotonic()
    print(f">> {request.method} {request.url}")

async def log_response(response):
    dt = (time.monotonic() - response.request._start) * 1000
    print(f"<< {response.status_code} ({dt:.1f} ms)")

def inject_trace(request):
    request.headers["X-Trace-Id"] = new_trace_id()

async with hyperhttp.Client(
    event_hooks={
        "request":  [log_request, inject_trace],
        "response": [log_response],
    },
) as client:
    await client.get("https://api.example.com/things")
'''

LIVE_HOOKS = '''
client.event_hooks["request"].append(my_new_hook)
'''

SIGNING = '''
import hmac, hashlib, datetime

def sign_aws(request):
    ts = datetime.datetime.utcnow().strftime("%Y%m%dT%H%M%SZ")
    request.headers["x-amz-date"] = ts
    canonical = f"{request.method}\\n{request.url.target}\\n{ts}"
    sig = hmac.new(SECRET_KEY.encode(), canonical.encode(), hashlib.sha256).hexdigest()
    request.headers["Authorization"] = f"AWS4-HMAC-SHA256 Signature={sig}"

async with hyperhttp.Client(event_hooks={"request": [sign_aws]}) as client:
    ...
'''

AUTH_IMPORTS = '''
import hyperhttp
from hyperhttp import BasicAuth, BearerAuth, DigestAuth
'''

BASIC = '''
async with hyperhttp.Client(auth=("alice", "s3cret")) as client:  # tuple shorthand
    r = await client.get("https://api.example.com/me")

async with hyperhttp.Client(auth=BasicAuth("alice", "s3cret")) as client:
    ...
'''

BEARER = '''
async with hyperhttp.Client(auth=BearerAuth("abc.def.ghi")) as client:
    ...
'''

DIGEST = '''
async with hyperhttp.Client(auth=DigestAuth("Mufasa", "Circle Of Life")) as client:
    r = await client.get("https://legacy.example.com/private")
'''

PER_REQUEST = '''
async with hyperhttp.Client(auth=BasicAuth("u", "p")) as client:
    await client.get("https://api.example.com/me")            # uses BasicAuth
    await client.get("https://api.example.com/public", auth=None)          # no auth
    await client.get("https://other.example.com/", auth=("x", "y"))        # override
'''

API_KEY_AUTH = '''
from hyperhttp import Auth

class ApiKeyAuth(Auth):
    def __init__(self, key: str) -> None:
        self._key = key

    def auth_flow(self, request):
        request.headers["X-API-Key"] = self._key
        yield request
'''

CHALLENGE_AUTH = '''
class MyChallengeAuth(Auth):
    requires_response = True
    def auth_flow(self, request):
        response = yield request
        if response.status_code == 401:
            request.headers["Authorization"] = compute(...)
            yield request
'''

# --- the local stand-in for the example hosts ----------------------------------------


@dataclass
class Seen:
    method: str
    url: str
    headers: dict[str, str]
    status: int


class ExampleHosts:
    """Answers every example host. legacy.example.com is a real RFC 7616
    server (`DigestServerApp`, driven through ASGI in-process); challenge.example
    wants ``Authorization: Custom ok``; everything else echoes the request."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.digest = DigestServerApp({"Mufasa": "Circle Of Life"})

    async def __call__(self, request: Request) -> Response:
        body = b"".join([chunk async for chunk in request.stream])
        headers = {k.lower(): v for k, v in request.headers.multi_items()}
        if request.url.host == "legacy.example.com":
            response = await self._asgi(request, body)
        elif request.url.host == "challenge.example" and headers.get("authorization") != (
            "Custom ok"
        ):
            response = Response(401, headers={"WWW-Authenticate": "Custom"})
        else:
            response = Response(200, json={"url": str(request.url), "headers": headers})
        self.seen.append(Seen(request.method, str(request.url), headers, response.status_code))
        return response

    async def _asgi(self, request: Request, body: bytes) -> Response:
        url = request.url
        scope: dict[str, Any] = {
            "type": "http",
            "method": request.method,
            "path": url.path,
            "raw_path": url.path.encode("latin-1"),
            "query_string": url.query.encode("latin-1"),
            "headers": [
                (k.lower().encode("latin-1"), v.encode("latin-1"))
                for k, v in request.headers.multi_items()
            ],
        }
        sent: list[MutableMapping[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(message)

        await self.digest(scope, receive, send)
        start, content = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
        return Response(
            start["status"],
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in start["headers"]],
            content=content,
        )

    def authorizations(self) -> list[str | None]:
        return [s.headers.get("authorization") for s in self.seen]


@pytest.fixture
def hosts(monkeypatch: pytest.MonkeyPatch) -> ExampleHosts:
    """Every `hyperhttp.Client` built while the test runs talks to `ExampleHosts`."""
    local = ExampleHosts()
    real_client = hyperhttp.Client

    class LocalClient(real_client):  # type: ignore[misc, valid-type]
        def __init__(self, **kwargs: Any) -> None:
            kwargs.setdefault("transport", hyperhttp.MockTransport(local))
            super().__init__(**kwargs)

    monkeypatch.setattr(hyperhttp, "Client", LocalClient)
    return local


async def run_example(source: str, namespace: dict[str, Any]) -> dict[str, Any]:
    """Run an example as a module body with top-level await; its names stay in `namespace`."""
    code = compile(source, "<spec example>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, namespace)  # our own constant example text
    if asyncio.iscoroutine(result):
        await result
    return namespace


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# --- event hooks ---------------------------------------------------------------------


async def test_event_hooks_example(
    loop_name: str, hosts: ExampleHosts, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = iter(["trace-1", "trace-2"])
    ns = await run_example(EVENT_HOOKS, {"new_trace_id": lambda: next(ids)})
    assert [s.url for s in hosts.seen] == ["https://api.example.com/things"]
    assert hosts.seen[0].headers["x-trace-id"] == "trace-1"
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ">> GET https://api.example.com/things"
    assert re.fullmatch(r"<< 200 \(\d+\.\d ms\)", lines[1])
    assert len(lines) == 2
    assert ns["client"].is_closed


async def test_live_hook_example(loop_name: str, hosts: ExampleHosts) -> None:
    calls: list[str] = []
    async with hyperhttp.Client() as client:
        ns = {"client": client, "my_new_hook": lambda request: calls.append(str(request.url))}
        await run_example(LIVE_HOOKS, ns)
        await client.get("https://api.example.com/a")
        client.event_hooks["request"].pop()
        await client.get("https://api.example.com/b")
    assert calls == ["https://api.example.com/a"]


async def test_signing_example(loop_name: str, hosts: ExampleHosts) -> None:
    # The page imported hyperhttp in the example before this one.
    ns = await run_example(SIGNING, {"SECRET_KEY": "k3y", "hyperhttp": hyperhttp})
    assert hosts.seen == []  # the example's body is `...`
    async with hyperhttp.Client(event_hooks={"request": [ns["sign_aws"]]}) as client:
        await client.put("https://s3.example.com/bucket/obj?acl", content=b"x")
    headers = hosts.seen[0].headers
    ts = headers["x-amz-date"]
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    stamped = datetime.datetime.strptime(ts, "%Y%m%dT%H%M%SZ")
    assert abs((now - stamped).total_seconds()) < 60
    canonical = f"PUT\n/bucket/obj?acl\n{ts}".encode()
    sig = hmac.new(b"k3y", canonical, hashlib.sha256).hexdigest()
    assert headers["authorization"] == f"AWS4-HMAC-SHA256 Signature={sig}"


# --- authentication ------------------------------------------------------------------


async def test_auth_imports_example(loop_name: str) -> None:
    ns = await run_example(AUTH_IMPORTS, {})
    assert ns["DigestAuth"] is hyperhttp.DigestAuth


async def test_basic_example(loop_name: str, hosts: ExampleHosts) -> None:
    ns = await run_example(BASIC, await run_example(AUTH_IMPORTS, {}))
    assert hosts.authorizations() == [basic("alice", "s3cret")]
    assert ns["r"].json()["headers"]["authorization"] == basic("alice", "s3cret")


async def test_bearer_example(loop_name: str, hosts: ExampleHosts) -> None:
    ns = await run_example(BEARER, await run_example(AUTH_IMPORTS, {}))
    assert ns["client"].auth is not None
    async with hyperhttp.Client(auth=ns["client"].auth) as client:
        await client.get("https://api.example.com/me")
    assert hosts.authorizations() == ["Bearer abc.def.ghi"]


async def test_digest_example(loop_name: str, hosts: ExampleHosts) -> None:
    ns = await run_example(DIGEST, await run_example(AUTH_IMPORTS, {}))
    assert ns["r"].status_code == 200
    assert ns["r"].json()["user"] == "Mufasa"
    assert [s.status for s in hosts.seen] == [401, 200]
    assert (hosts.authorizations()[1] or "").startswith('Digest username="Mufasa"')


async def test_per_request_example(loop_name: str, hosts: ExampleHosts) -> None:
    await run_example(PER_REQUEST, await run_example(AUTH_IMPORTS, {}))
    assert [s.url for s in hosts.seen] == [
        "https://api.example.com/me",
        "https://api.example.com/public",
        "https://other.example.com/",
    ]
    assert hosts.authorizations() == [basic("u", "p"), None, basic("x", "y")]


async def test_custom_scheme_examples(loop_name: str, hosts: ExampleHosts) -> None:
    ns = await run_example(API_KEY_AUTH, {})
    await run_example(CHALLENGE_AUTH, ns)
    ns["compute"] = lambda *args: "Custom ok"
    async with hyperhttp.Client(auth=ns["ApiKeyAuth"]("key-1")) as client:
        keyed = await client.get("https://api.example.com/things")
        challenged = await client.get(
            "https://challenge.example/private", auth=ns["MyChallengeAuth"]()
        )
    assert keyed.json()["headers"]["x-api-key"] == "key-1"
    assert challenged.status_code == 200
    assert [s.status for s in hosts.seen] == [200, 401, 200]
    assert hosts.authorizations() == [None, None, "Custom ok"]
    assert issubclass(ns["ApiKeyAuth"], hyperhttp.Auth)
