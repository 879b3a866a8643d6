"""Redirects: the next request after a 3xx response (pure).

Method rules follow what browsers and RFC 9110 settled on: 303 turns
anything but HEAD into GET; 301 and 302 turn POST into GET; 307 and 308
keep the method and the body, which must then be replayable. On a change
of origin the credentials of the old origin stay behind: Authorization,
Proxy-Authorization and Cookie are dropped (cookies for the new origin come
from the jar again). A change to GET drops the body and the headers that
describe it (RFC 9110 section 15.4). A user name and password written into
a Location are removed, never used: the server chose them, not the caller.
"""

from __future__ import annotations

from ._content import EMPTY_BODY, RequestBody
from ._exceptions import InvalidURL, RemoteProtocolError, StreamConsumed
from ._models import Request, Response
from ._urls import URL

_CREDENTIAL_HEADERS = ("authorization", "proxy-authorization", "cookie")
# RFC 9110 section 15.4's list of content-specific fields, plus the framing
# (Transfer-Encoding) and the RFC 9530 successors of Digest.
_BODY_HEADERS = (
    "content-length",
    "content-type",
    "transfer-encoding",
    "content-encoding",
    "content-language",
    "content-location",
    "digest",
    "content-digest",
    "repr-digest",
    "last-modified",
)


def redirect_method(method: str, status: int) -> str:
    if status == 303 and method != "HEAD":
        return "GET"
    if status in (301, 302) and method == "POST":
        return "GET"
    return method


def redirect_url(request: Request, response: Response) -> URL:
    location = response.headers.get("location")
    if not location:
        raise RemoteProtocolError(
            f"redirect {response.status_code} from {request.url.host} has no Location"
        )
    try:
        url = request.url.join(location)
    except InvalidURL as exc:
        raise RemoteProtocolError(
            f"redirect from {request.url.host} has an invalid Location: {exc}"
        ) from None
    if url.scheme not in ("http", "https"):
        raise InvalidURL(f"redirect to unsupported scheme {url.scheme!r}")
    # Credentials in a Location would be kept for every later relative hop
    # and shown in response.url; the caller's auth is what authenticates.
    url = url.without_credentials()
    if not url.fragment and request.url.fragment:
        url = url.copy_with(fragment=request.url.fragment)
    return url


def same_origin(a: URL, b: URL) -> bool:
    return a.scheme == b.scheme and a.host == b.host and a.port == b.port


def build_redirect(request: Request, response: Response) -> Request:
    """The request to send for `response`, a redirect of `request`."""
    url = redirect_url(request, response)
    method = redirect_method(request.method, response.status_code)
    headers = request.headers.copy()
    if "host" in headers:
        del headers["host"]
    if not same_origin(url, request.url):
        for name in _CREDENTIAL_HEADERS:
            if name in headers:
                del headers[name]
    elif "cookie" in headers and request.extensions.get("cookie_from_jar"):
        # Rebuilt from the jar for the next hop, which may have set cookies;
        # a Cookie header the caller wrote stays as written.
        del headers["cookie"]
    if method != request.method and method == "GET":
        for name in _BODY_HEADERS:
            if name in headers:
                del headers[name]
        body: RequestBody = EMPTY_BODY
    else:
        body = request.stream
        if not body.is_replayable and body.content_length != 0:
            raise StreamConsumed(
                f"the server answered {response.status_code} and asked for the body to be "
                "sent again, but it is a single-use stream; pass bytes or a file path"
            )
    extensions = dict(request.extensions)
    for hop_only in ("cookie_from_jar", "target", "framing"):
        extensions.pop(hop_only, None)
    return Request(method, url, headers=headers, stream=body, extensions=extensions)
