from __future__ import annotations

import asyncio
import inspect

import pytest

import hyperhttp._exceptions as exc_module
from hyperhttp._exceptions import (
    CircuitBreakerOpen,
    ConnectError,
    ConnectTimeout,
    CoordinatorError,
    DecodingError,
    DNSError,
    HyperHTTPError,
    InvalidURL,
    LocalProtocolError,
    NetworkError,
    PoolClosed,
    PoolTimeout,
    ProxyError,
    ReadError,
    ReadTimeout,
    RemoteProtocolError,
    ResponseTooLarge,
    RetryError,
    StreamConsumed,
    StreamReset,
    TimeoutException,
    TLSError,
    TooManyRedirects,
    WriteError,
    WriteTimeout,
)
from hyperhttp.errors.classify import (
    CATEGORY_BY_CLASS,
    REFUSED_STREAM,
    ErrorCategory,
    classify,
    classify_reset,
    classify_status,
    parse_categories,
    status_category,
    was_never_sent,
)

C = ErrorCategory

ALL_EXCEPTION_CLASSES = [
    obj
    for _, obj in inspect.getmembers(exc_module, inspect.isclass)
    if issubclass(obj, HyperHTTPError) and obj.__module__ == exc_module.__name__
]


def make(cls: type[HyperHTTPError]) -> HyperHTTPError:
    """An instance of any class of the hierarchy, whatever its signature."""
    if cls is CircuitBreakerOpen:
        return CircuitBreakerOpen("example.com:443", 3.0)
    if cls is RetryError:
        return RetryError("gave up", original_exception=ReadTimeout("slow"), attempts=3)
    if cls is exc_module.HTTPStatusError:
        return _status_error(404)
    return cls("boom")


class _FakeResponse:
    def __init__(self, status_code: int) -> None:
        self.status_code = status_code


def _status_error(status: int) -> HyperHTTPError:
    err = exc_module.HTTPStatusError.__new__(exc_module.HTTPStatusError)
    HyperHTTPError.__init__(err, f"status {status}")
    err.response = _FakeResponse(status)  # type: ignore[assignment]
    return err


def test_hierarchy_is_discovered() -> None:
    assert len(ALL_EXCEPTION_CLASSES) >= 28
    assert ConnectTimeout in ALL_EXCEPTION_CLASSES


@pytest.mark.parametrize("cls", ALL_EXCEPTION_CLASSES, ids=lambda c: c.__name__)
def test_every_exception_class_has_an_explicit_category(cls: type[HyperHTTPError]) -> None:
    # A new class in _exceptions.py must get a deliberate entry.
    assert cls in CATEGORY_BY_CLASS, f"{cls.__name__} has no category"
    assert isinstance(classify(make(cls)), ErrorCategory)


EXPECTED = {
    ConnectError: C.CONNECTION,
    ConnectTimeout: C.TIMEOUT,
    ReadTimeout: C.TIMEOUT,
    WriteTimeout: C.TIMEOUT,
    PoolTimeout: C.TIMEOUT,
    TimeoutException: C.TIMEOUT,
    ReadError: C.TRANSIENT,
    WriteError: C.TRANSIENT,
    NetworkError: C.TRANSIENT,
    RemoteProtocolError: C.TRANSIENT,
    LocalProtocolError: C.CLIENT,
    TLSError: C.TLS,
    DNSError: C.DNS,
    ProxyError: C.CONNECTION,
    DecodingError: C.PROTOCOL,
    TooManyRedirects: C.CLIENT,
    InvalidURL: C.CLIENT,
    ResponseTooLarge: C.CLIENT,
    StreamConsumed: C.CLIENT,
    PoolClosed: C.CLIENT,
    CoordinatorError: C.CLIENT,
    CircuitBreakerOpen: C.CIRCUIT_OPEN,
}


@pytest.mark.parametrize("cls", list(EXPECTED), ids=lambda c: c.__name__)
def test_documented_mapping(cls: type[HyperHTTPError]) -> None:
    assert classify(make(cls)) is EXPECTED[cls]


def test_connect_refused_is_not_filed_as_a_timeout() -> None:
    assert classify(ConnectError("refused")) is C.CONNECTION
    assert classify(ConnectTimeout("slow")) is C.TIMEOUT


@pytest.mark.parametrize(
    ("code", "category"),
    [
        (REFUSED_STREAM, C.TRANSIENT),
        (0x8, C.TRANSIENT),  # CANCEL
        (0x1, C.PROTOCOL),
        (0x2, C.SERVER),
        (0xB, C.RATE_LIMIT),
        (0xC, C.TLS),
        (0xA, C.CONNECTION),
        (0xFF, C.SERVER),  # unknown codes read as INTERNAL_ERROR
    ],
)
def test_stream_reset_by_error_code(code: int, category: ErrorCategory) -> None:
    assert classify(StreamReset("reset", error_code=code)) is category
    assert classify_reset(code) is category


@pytest.mark.parametrize(
    ("status", "category"),
    [
        (400, C.CLIENT),
        (404, C.CLIENT),
        (429, C.RATE_LIMIT),
        (499, C.CLIENT),
        (500, C.SERVER),
        (502, C.SERVER),
        (503, C.TRANSIENT),
        (504, C.SERVER),
        (599, C.SERVER),
    ],
)
def test_status_mapping(status: int, category: ErrorCategory) -> None:
    assert classify(status) is category
    assert classify_status(status) is category


@pytest.mark.parametrize("status", [200, 304, 399, 600, 0])
def test_non_failure_status_is_refused(status: int) -> None:
    with pytest.raises(ValueError):
        classify(status)


@pytest.mark.parametrize(
    ("status", "category"),
    [(100, None), (200, None), (304, None), (399, None), (404, C.CLIENT), (429, C.RATE_LIMIT),
     (503, C.TRANSIENT), (599, C.SERVER), (600, None), (700, None), (999, None)],
)
def test_status_category_is_none_for_non_failures(status: int, category: C | None) -> None:
    """The HTTP/1.1 parser lets any three digits through (LinkedIn's 999):
    the retry policy, telemetry and the breaker ask this, and a status
    beyond 599 used to raise ValueError out of every one of them."""
    assert status_category(status) is category
    with pytest.raises(TypeError):
        status_category(True)


def test_non_classifiable_values() -> None:
    with pytest.raises(TypeError):
        classify("503")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        classify_status(True)


def test_instance_dependent_classes() -> None:
    assert classify(ProxyError("tunnel", status_code=407)) is C.CLIENT
    assert classify(ProxyError("tunnel", status_code=503)) is C.TRANSIENT
    assert classify(ProxyError("tunnel", status_code=200)) is C.CONNECTION
    assert classify(_status_error(502)) is C.SERVER
    assert classify(_status_error(404)) is C.CLIENT
    wrapped = RetryError("gave up", original_exception=ConnectError("refused"))
    assert classify(wrapped) is C.CONNECTION
    assert classify(RetryError("gave up", original_exception=None)) is C.UNKNOWN


def test_foreign_exceptions_are_unknown() -> None:
    assert classify(ValueError("x")) is C.UNKNOWN
    assert classify(OSError("x")) is C.UNKNOWN
    assert classify(asyncio.CancelledError()) is C.UNKNOWN


def test_unlisted_subclass_inherits_its_parents_category() -> None:
    class SlowHandshake(ConnectTimeout):
        pass

    assert classify(SlowHandshake("x")) is C.TIMEOUT


def test_category_values_are_their_names() -> None:
    for category in ErrorCategory:
        assert category.value == category.name
        assert category == category.name
    assert ErrorCategory("TRANSIENT") is C.TRANSIENT


@pytest.mark.parametrize(
    ("exc", "never_sent"),
    [
        (ConnectError("refused"), True),
        (ConnectTimeout("slow"), True),
        (PoolTimeout("full"), True),
        (DNSError("nx"), True),
        (TLSError("cert"), True),
        (ProxyError("tunnel", status_code=502), True),
        (LocalProtocolError("bad header"), True),
        (CircuitBreakerOpen("h:1", 1.0), True),
        (StreamReset("refused", error_code=REFUSED_STREAM), True),
        (StreamReset("cancel", error_code=0x8), False),
        (ReadTimeout("slow"), False),
        (WriteTimeout("slow"), False),
        (ReadError("reset"), False),
        (WriteError("reset"), False),
        (RemoteProtocolError("closed"), False),
        (RetryError("x", original_exception=ConnectError("refused")), False),
        (ValueError("x"), False),
    ],
    ids=repr,
)
def test_was_never_sent(exc: BaseException, never_sent: bool) -> None:
    assert was_never_sent(exc) is never_sent


def test_parse_categories() -> None:
    assert parse_categories(["transient", C.TIMEOUT, "SERVER"]) == {
        C.TRANSIENT,
        C.TIMEOUT,
        C.SERVER,
    }
    with pytest.raises(ValueError, match="BOGUS"):
        parse_categories(["BOGUS"])
    with pytest.raises(TypeError, match="not one string"):
        parse_categories("TIMEOUT")
    with pytest.raises(TypeError):
        parse_categories([1])  # type: ignore[list-item]
