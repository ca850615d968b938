"""TWS error and notice codes (the `code` of an ERR_MSG), named as ibgw uses them.

Codes 5xx are the client library's own ("couldn't connect", "not connected"); the rest are what
TWS / IB Gateway sends. 21xx are informational notices, not errors.
"""

from __future__ import annotations

from enum import IntEnum


class Code(IntEnum):
    MAX_TICKERS = 101  # market data lines exhausted
    DUPLICATE_ORDER_ID = 103
    MODIFY_FILLED_ORDER = 104  # cannot modify a filled order
    MODIFY_MISMATCH = 105  # the modification does not match the original order
    HISTORICAL_DATA_ERROR = 162  # includes pacing violations
    NO_SECURITY_DEFINITION = 200  # also: an ambiguous contract
    ORDER_CANCELED = 202
    UNKNOWN_TICKER_ID = 300  # cancel of a market data line that does not exist
    REQUEST_READ_ERROR = 320  # "Error reading request"
    REQUEST_VALIDATION_ERROR = 321  # "Error validating request"; a read-only API refuses orders with it
    REQUEST_PROCESSING_ERROR = 322  # e.g. a duplicate ticker id
    CLIENT_ID_IN_USE = 326
    UNSUPPORTED_ORDER_TYPE = 387
    ZERO_ORDER_SIZE = 434
    CONNECT_FAIL = 502  # the client library cannot connect
    NOT_CONNECTED = 504
    CONNECTIVITY_LOST = 1100
    CONNECTIVITY_RESTORED_DATA_LOST = 1101
    CONNECTIVITY_RESTORED = 1102
    MARKET_DATA_FARM_OK = 2104
    HISTORICAL_DATA_FARM_OK = 2106
    SEC_DEF_FARM_OK = 2158
    ORDER_TO_CANCEL_NOT_FOUND = 10147


def is_notice(code: int) -> bool:
    """Informational codes (farm status 2104/2106/2158 and the other 21xx warnings)."""
    return 2100 <= code < 2200
