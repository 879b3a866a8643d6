"""What an HTTP/2 connection does with the events h2 hands it: each is filed
on its stream (data, head, end, trailers, reset) or changes the
connection's own state (send window, SETTINGS, GOAWAY, PING answers).

`H2Events` is a part of `HTTP2Connection` (http2.py), kept apart because
reading frames and filing their events are two jobs; it uses only the
connection attributes declared below.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from .._proto.h2heads import status_of
from .._proto.http2 import error_name, remote_stream_limit
from .h2ping import IdlePinger
from .h2streams import Stream, wake

_MAX_CONCURRENT = h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS
_INITIAL_WINDOW = h2.settings.SettingCodes.INITIAL_WINDOW_SIZE


class H2Events:
    """Event filing for `HTTP2Connection`, which sets these attributes."""

    peer: str
    _h2: Any  # h2.connection.H2Connection (h2 is untyped)
    _streams: dict[int, Stream]
    _blocked: set[Stream]
    _limit: int
    _settings_received: bool
    _settings_waiter: asyncio.Future[None] | None
    _capacity_waiters: list[asyncio.Future[None]]
    _goaway: tuple[int, int] | None
    _pinger: IdlePinger

    def _dispatch(self, events: list[h2.events.Event]) -> bool:
        """File each event on its stream; True when the pool should look again."""
        streams = self._streams
        notify = False
        ev = h2.events
        for event in events:
            if isinstance(event, ev.DataReceived):
                st = streams.get(event.stream_id)
                if st is None:  # released already: credit back at once (rule 4)
                    self._h2.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                else:
                    data = event.data
                    st.receive_data(data, False)
                    padding = event.flow_controlled_length - len(data)
                    if padding:  # counted by flow control, never read: credit now
                        self._h2.acknowledge_received_data(padding, event.stream_id)
            elif isinstance(event, ev.ResponseReceived):
                st = streams.get(event.stream_id)
                if st is not None:
                    st.receive_head(event.headers)
            elif isinstance(event, ev.StreamEnded):
                st = streams.get(event.stream_id)
                if st is not None:
                    st.receive_end(self.peer)
            elif isinstance(event, ev.TrailersReceived):
                st = streams.get(event.stream_id)
                if st is not None:
                    st.trailers = event.headers
            elif isinstance(event, ev.WindowUpdated):
                self._window_opened(event.stream_id)
            elif isinstance(event, ev.StreamReset):
                self._stream_reset(event)
            elif isinstance(event, ev.RemoteSettingsChanged):
                notify = self._settings_changed(event) or notify
            elif isinstance(event, ev.ConnectionTerminated):
                self._goaway_received(event)
                notify = True
            elif isinstance(event, ev.PingAckReceived):
                self._pinger.acked(event.ping_data)
            elif (
                isinstance(event, ev.InformationalResponseReceived)
                and status_of(event.headers) == b"101"
            ):
                self._refuse_switching(event.stream_id)
            # Server PINGs are answered by h2; other informational responses,
            # priority, ALTSVC and unknown frames need nothing from us.
        return notify

    def _refuse_switching(self, stream_id: int) -> None:
        """A 101 (Switching Protocols) answered one of our streams. HTTP/2
        has no protocol switch (RFC 9113, section 8.6), and h2 takes it as
        any 1xx; the response is malformed: reset the stream with
        PROTOCOL_ERROR and fail its request. Other streams go on."""
        code = h2.errors.ErrorCodes.PROTOCOL_ERROR
        try:
            self._h2.reset_stream(stream_id, code)
        except h2.exceptions.H2Error:
            pass  # h2 considers the stream closed already
        st = self._streams.get(stream_id)
        if st is not None:
            st.receive_reset(
                int(code), remote=False, peer=self.peer,
                why="101 (Switching Protocols): HTTP/2 has no protocol switch, RFC 9113 section 8.6",
            )

    def _window_opened(self, stream_id: int | None) -> None:
        if not self._blocked:
            return
        if not stream_id:
            for st in self._blocked:
                wake(st.waiter)
        else:
            one = self._streams.get(stream_id)
            if one is not None:
                wake(one.waiter)

    def _stream_reset(self, event: h2.events.StreamReset) -> None:
        st = self._streams.get(event.stream_id or 0)
        if st is not None:
            code = int(event.error_code or 0)
            st.receive_reset(code, remote=event.remote_reset, peer=self.peer)

    def _settings_changed(self, event: h2.events.RemoteSettingsChanged) -> bool:
        changed = event.changed_settings
        notify = False
        if _MAX_CONCURRENT in changed or not self._settings_received:
            old, self._limit = self._limit, remote_stream_limit(self._h2)
            if self._limit > old:
                for fut in self._capacity_waiters:
                    wake(fut)
            notify = True
        if _INITIAL_WINDOW in changed:
            self._window_opened(0)
        if not self._settings_received:
            self._settings_received = True
            wake(self._settings_waiter)
        return notify

    def _goaway_received(self, event: h2.events.ConnectionTerminated) -> None:
        last = event.last_stream_id or 0
        code = int(event.error_code or 0)
        self._goaway = (last, code)
        for st in self._streams.values():
            if st.id > last:
                st.not_processed(f"{self.peer} sent GOAWAY ({error_name(code)})")
        for fut in self._capacity_waiters:
            wake(fut)
