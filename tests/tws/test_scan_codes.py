"""The one frame scanner (frame_spans, FrameCounter) and the named error codes."""

import pytest
from ibapi import errors

from ibgw_provision.tws import FrameTooLarge, frame
from ibgw_provision.tws.codes import Code, is_notice
from ibgw_provision.tws.framing import FrameCounter, frame_spans


def test_frame_spans_include_a_last_frame_that_runs_past_the_buffer():
    data = frame(b"one") + frame(b"three")
    assert list(frame_spans(data + data[:6])) == [(0, 7), (7, 16), (16, 23)]
    assert list(frame_spans(data, pos=7)) == [(7, 16)]
    with pytest.raises(FrameTooLarge) as caught:
        list(frame_spans(data + frame(b"x" * 10), max_size=9))
    assert (caught.value.size, caught.value.limit) == (10, 9)


def test_frame_counter_counts_frames_split_inside_a_length_prefix():
    data = frame(b"one") + frame(b"") + frame(b"three")
    counter = FrameCounter()
    assert [counter.feed(data[:2]), counter.feed(data[2:9]), counter.feed(data[9:])] == [0, 1, 2]


def test_named_codes_agree_with_ibapi():
    assert (Code.CONNECT_FAIL, Code.NOT_CONNECTED) == (
        errors.CONNECT_FAIL.code(),
        errors.NOT_CONNECTED.code(),
    )
    assert is_notice(Code.MARKET_DATA_FARM_OK) and not is_notice(Code.CLIENT_ID_IN_USE)
