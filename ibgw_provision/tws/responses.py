"""Readers for the few gateway -> client messages the gate learns from, and a tap that finds them in a
relayed byte stream without holding it up.

What is read: the conId, secType and multiplier of contracts the gateway describes (contractData,
bondContractData, openOrder, position, portfolioValue), order states (orderStatus, openOrder, and
errors that end an order), and the accounts of a logon (managedAccounts). Text (ibapi's decoder
layouts) or protobuf. Anything unreadable raises MalformedMessage.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Container
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message as Protobuf
from ibapi.protobuf import (
    ContractData_pb2,
    ErrorMessage_pb2,
    ManagedAccounts_pb2,
    OpenOrder_pb2,
    OrderStatus_pb2,
    PortfolioValue_pb2,
    Position_pb2,
)

from . import versions
from .codec import ID_BYTES, Message
from .fields import FieldReader, double_text
from .framing import frame_spans
from .messages import PROTOBUF_MSG_ID, In
from .requests import protobuf

MD_SIZE_MULTIPLIER = 110  # contract data carried a market-data size multiplier from here to SIZE_RULES
CONTRACT_MESSAGES = frozenset(
    {In.CONTRACT_DATA, In.BOND_CONTRACT_DATA, In.OPEN_ORDER, In.POSITION_DATA, In.PORTFOLIO_VALUE}
)


@dataclass(frozen=True)
class ContractFacts:
    """What the gateway says a conId is."""

    con_id: int
    sec_type: str
    multiplier: str = ""


@dataclass(frozen=True)
class OrderState:
    """An order's status as the gateway reports it to its owner."""

    order_id: int
    status: str


@dataclass(frozen=True)
class ErrorReply:
    req_id: int
    code: int
    text: str


def _pb_contract(pb: Any) -> ContractFacts:
    multiplier = double_text(pb.multiplier) if pb.HasField("multiplier") else ""
    return ContractFacts(pb.conId, pb.secType, multiplier)


def _pb(message: Message, proto_type: type[Protobuf]) -> Any:
    return protobuf(message, proto_type)


# ---- contracts -------------------------------------------------------------------------------


def _text_contract_data(version: int, r: FieldReader) -> ContractFacts:
    if version < versions.SIZE_RULES:
        r.skip()  # message version (8 from every server this speaks to): reqId follows
    r.skip()  # reqId
    r.skip()  # symbol
    sec_type = r.str()
    r.skip(2 if version >= versions.LAST_TRADE_DATE else 1)  # lastTradeDateOrContractMonth[, lastTradeDate]
    r.skip(7)  # strike, right, exchange, currency, localSymbol, marketName, tradingClass
    con_id = r.int()
    r.skip()  # minTick
    if MD_SIZE_MULTIPLIER <= version < versions.SIZE_RULES:
        r.skip()
    return ContractFacts(con_id, sec_type, r.str())


def _text_bond_contract_data(version: int, r: FieldReader) -> ContractFacts:
    if version < versions.SIZE_RULES:
        r.skip()
    r.skip(2)  # reqId, symbol
    sec_type = r.str()
    r.skip(15)  # cusip .. tradingClass
    return ContractFacts(r.int(), sec_type or "BOND")


def _text_contract_prefix(r: FieldReader, multiplier: bool = True) -> ContractFacts:
    """conId, symbol, secType, lastTradeDate, strike, right[, multiplier]."""
    con_id = r.int()
    r.skip()
    sec_type = r.str()
    r.skip(3)
    return ContractFacts(con_id, sec_type, r.str() if multiplier else "")


def _text_open_order_contract(version: int, r: FieldReader) -> ContractFacts:
    order_version = r.int() if version < versions.ORDER_CONTAINER else version
    r.skip()  # orderId
    return _text_contract_prefix(r, order_version >= 32)


def _text_position_contract(version: int, r: FieldReader) -> ContractFacts:
    r.skip(2)  # message version, account
    return _text_contract_prefix(r)


def _text_portfolio_contract(version: int, r: FieldReader) -> ContractFacts:
    r.skip()  # message version
    return _text_contract_prefix(r)


_TEXT_CONTRACT: dict[int, Callable[[int, FieldReader], ContractFacts]] = {
    In.CONTRACT_DATA: _text_contract_data,
    In.BOND_CONTRACT_DATA: _text_bond_contract_data,
    In.OPEN_ORDER: _text_open_order_contract,
    In.POSITION_DATA: _text_position_contract,
    In.PORTFOLIO_VALUE: _text_portfolio_contract,
}
_PB_CONTRACT: dict[int, type[Protobuf]] = {
    In.CONTRACT_DATA: ContractData_pb2.ContractData,
    In.BOND_CONTRACT_DATA: ContractData_pb2.ContractData,
    In.OPEN_ORDER: OpenOrder_pb2.OpenOrder,
    In.POSITION_DATA: Position_pb2.Position,
    In.PORTFOLIO_VALUE: PortfolioValue_pb2.PortfolioValue,
}


def read_contract(version: int, message: Message) -> ContractFacts:
    """The contract a CONTRACT_MESSAGES message describes."""
    if message.protobuf:
        return _pb_contract(_pb(message, _PB_CONTRACT[message.msg_id]).contract)
    return _TEXT_CONTRACT[message.msg_id](version, FieldReader(message.fields()))


# ---- order states, errors, accounts ------------------------------------------------------------


def read_order_status(version: int, message: Message) -> OrderState:
    if message.protobuf:
        pb = _pb(message, OrderStatus_pb2.OrderStatus)
        return OrderState(pb.orderId, pb.status)
    r = FieldReader(message.fields())
    if version < versions.MARKET_CAP_PRICE:
        r.skip()
    return OrderState(r.int(), r.str())


def read_open_order_id(version: int, message: Message) -> int:
    if message.protobuf:
        return _pb(message, OpenOrder_pb2.OpenOrder).orderId
    r = FieldReader(message.fields())
    if version < versions.ORDER_CONTAINER:
        r.skip()
    return r.int()


def read_error(version: int, message: Message) -> ErrorReply:
    if message.protobuf:
        pb = _pb(message, ErrorMessage_pb2.ErrorMessage)
        return ErrorReply(pb.id, pb.errorCode, pb.errorMsg)
    r = FieldReader(message.fields())
    if version < versions.ERROR_TIME:
        r.skip()
    return ErrorReply(r.int(), r.int(), r.str())


def read_managed_accounts(version: int, message: Message) -> tuple[str, ...]:
    if message.protobuf:
        text = _pb(message, ManagedAccounts_pb2.ManagedAccounts).accountsList
    else:
        r = FieldReader(message.fields())
        r.skip()  # message version
        text = r.str()
    return tuple(a.strip() for a in text.split(",") if a.strip())


# ---- the tap -----------------------------------------------------------------------------------

_RAW_ID = struct.Struct(">I")
MAX_TAPPED = 1 << 20  # a message the gate reads is small; a bigger one is counted but not read


class ResponseTap:
    """Counts the frames of a byte stream fed in arbitrary chunks, and hands each complete message
    whose id is in `wanted` to `on_message`. Only an incomplete wanted frame (or a split length prefix
    or id) is kept between chunks; everything else is skipped without copying."""

    def __init__(self, version: int, wanted: Container[int], on_message: Callable[[Message], None]):
        self.version, self.wanted, self.on_message = version, wanted, on_message
        self._raw_ids = version >= versions.PROTOBUF
        self._carry = b""  # the start of a frame still being completed
        self._owed = 0  # bytes of an unwanted frame still to skip

    def feed(self, data: bytes) -> int:
        """Frames whose length prefix completes in `data` (a frame carried over counts when it completes)."""
        if self._owed >= len(data):
            self._owed -= len(data)
            return 0
        pos, self._owed = self._owed, 0
        frames = 0
        if self._carry:
            data, pos = self._carry + bytes(data[pos:]), 0  # the carried frame is counted when it completes
            self._carry = b""
        head = 4 + (4 if self._raw_ids else ID_BYTES)
        for start, end in frame_spans(data, pos, 0xFFFFFFFF):
            frames += 1
            if min(end, start + head) > len(data):  # its id is not all here yet
                self._carry = bytes(data[start:])
                return frames - 1
            msg_id, is_pb, body = self._id(data, start + 4, min(end, start + head))
            if msg_id in self.wanted and end - start <= MAX_TAPPED:
                if end > len(data):
                    self._carry = bytes(data[start:])
                    return frames - 1
                self.on_message(Message(msg_id, is_pb, bytes(data[body:end])))
            elif end > len(data):
                self._owed = end - len(data)
                return frames
            pos = end
        if pos < len(data):
            self._carry = bytes(data[pos:])  # a split length prefix
        return frames

    def _id(self, data: bytes, start: int, end: int) -> tuple[int, bool, int]:
        """(id, protobuf?, where the body starts) of the payload at data[start:]; id -1 when unreadable."""
        if self._raw_ids:
            if end - start < 4:
                return -1, False, start
            (msg_id,) = _RAW_ID.unpack_from(data, start)
            if msg_id > PROTOBUF_MSG_ID:
                return msg_id - PROTOBUF_MSG_ID, True, start + 4
            return msg_id, False, start + 4
        nul = data.find(b"\0", start, end)
        if nul < 0 or not data[start:nul].isdigit():
            return -1, False, start
        return int(data[start:nul]), False, nul + 1
