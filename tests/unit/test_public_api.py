"""The public surface: `hyperhttp.__all__`, the documented import paths and
the exception tree of basic-usage.md."""

from __future__ import annotations

import importlib
import re

import pytest

import hyperhttp


def _isort_key(name: str) -> tuple[int, str]:
    # The order ruff's RUF022 keeps: SCREAMING_CASE, then CamelCase, then the rest.
    if name.isupper():
        return (0, name)
    if name[:1].isupper():
        return (1, name)
    return (2, name)


def test_all_is_sorted_and_unique() -> None:
    names = list(hyperhttp.__all__)
    assert names == sorted(names, key=_isort_key)
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("name", hyperhttp.__all__)
def test_every_exported_name_exists(name: str) -> None:
    assert getattr(hyperhttp, name) is not None


def test_public_classes_live_in_private_modules_or_are_reexported() -> None:
    for name in hyperhttp.__all__:
        obj = getattr(hyperhttp, name)
        module = getattr(obj, "__module__", "hyperhttp")
        assert module.startswith("hyperhttp"), (name, module)


def test_version_is_a_version_string() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+([.-]?\w+)?", hyperhttp.__version__)


DOCUMENTED_PATHS = [
    ("hyperhttp", "Client"),
    ("hyperhttp", "Auth"),
    ("hyperhttp", "BasicAuth"),
    ("hyperhttp", "BearerAuth"),
    ("hyperhttp", "DigestAuth"),
    ("hyperhttp", "MultipartEncoder"),
    ("hyperhttp", "MultipartFile"),
    ("hyperhttp", "CircuitBreakerOpen"),
    ("hyperhttp", "Timeout"),
    ("hyperhttp", "MockTransport"),
    ("hyperhttp", "install_uvloop"),
    ("hyperhttp.errors.retry", "RetryPolicy"),
    ("hyperhttp.errors.retry", "RetryError"),
    ("hyperhttp.errors.circuit_breaker", "DomainCircuitBreakerManager"),
    ("hyperhttp.errors.telemetry", "ErrorTelemetry"),
    ("hyperhttp.utils.backoff", "ExponentialBackoff"),
    ("hyperhttp.utils.backoff", "DecorrelatedJitterBackoff"),
    ("hyperhttp.shared", "Coordinator"),
]


@pytest.mark.parametrize(("module", "name"), DOCUMENTED_PATHS,
                         ids=[f"{m}.{n}" for m, n in DOCUMENTED_PATHS])
def test_documented_import_path(module: str, name: str) -> None:
    imported = importlib.import_module(module)
    assert hasattr(imported, name), f"{module}.{name} is documented but missing"


def test_retry_error_is_one_class() -> None:
    from hyperhttp.errors.retry import RetryError

    assert RetryError is hyperhttp.RetryError


# Child -> parent, exactly as drawn in basic-usage.md ("Errors"), plus
# StreamReset and RequestNotProcessed, which _exceptions.py files under
# RemoteProtocolError.
EXCEPTION_TREE = {
    "HyperHTTPError": "Exception",
    "TransportError": "HyperHTTPError",
    "TimeoutException": "TransportError",
    "ConnectTimeout": "TimeoutException",
    "ReadTimeout": "TimeoutException",
    "WriteTimeout": "TimeoutException",
    "PoolTimeout": "TimeoutException",
    "NetworkError": "TransportError",
    "ConnectError": "NetworkError",
    "ReadError": "NetworkError",
    "WriteError": "NetworkError",
    "ProtocolError": "TransportError",
    "RemoteProtocolError": "ProtocolError",
    "LocalProtocolError": "ProtocolError",
    "StreamReset": "RemoteProtocolError",
    "RequestNotProcessed": "RemoteProtocolError",
    "ProxyError": "TransportError",
    "TLSError": "TransportError",
    "DNSError": "HyperHTTPError",
    "HTTPStatusError": "HyperHTTPError",
    "TooManyRedirects": "HyperHTTPError",
    "InvalidURL": "HyperHTTPError",
    "DecodingError": "HyperHTTPError",
    "ResponseTooLarge": "HyperHTTPError",
    "StreamConsumed": "HyperHTTPError",
    "PoolClosed": "HyperHTTPError",
    "CircuitBreakerOpen": "HyperHTTPError",
    "RetryError": "HyperHTTPError",
    "CoordinatorError": "HyperHTTPError",
}


@pytest.mark.parametrize(("child", "parent"), sorted(EXCEPTION_TREE.items()))
def test_exception_parent(child: str, parent: str) -> None:
    cls = getattr(hyperhttp, child)
    expected = Exception if parent == "Exception" else getattr(hyperhttp, parent)
    assert cls.__bases__ == (expected,)


def test_every_exported_exception_is_in_the_tree() -> None:
    exported = {
        name for name in hyperhttp.__all__
        if isinstance(getattr(hyperhttp, name), type)
        and issubclass(getattr(hyperhttp, name), BaseException)
        and not issubclass(getattr(hyperhttp, name), Warning)
    }
    assert exported == set(EXCEPTION_TREE)


def test_the_insecure_tls_warning_is_public_and_a_user_warning() -> None:
    assert issubclass(hyperhttp.InsecureTLSWarning, UserWarning)
    assert not issubclass(hyperhttp.InsecureTLSWarning, hyperhttp.HyperHTTPError)


def test_exception_constructors_keep_their_data() -> None:
    opened = hyperhttp.CircuitBreakerOpen("api.example.com:443", 12.5)
    assert opened.host == "api.example.com:443"
    assert opened.remaining == 12.5
    assert "api.example.com:443" in str(opened)
    cause = hyperhttp.ReadTimeout("slow")
    retry = hyperhttp.RetryError("gave up", original_exception=cause)
    assert retry.original_exception is cause
    request = hyperhttp.Request("GET", "https://example.com/")
    response = hyperhttp.Response(500, request=request)
    status = hyperhttp.HTTPStatusError("boom", request=request, response=response)
    assert status.request is request and status.response is response
    bare = hyperhttp.ConnectError("refused")
    assert not bare.has_request
    with pytest.raises(RuntimeError):
        _ = bare.request
