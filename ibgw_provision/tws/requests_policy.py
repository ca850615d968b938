"""What each client -> gateway request does: read, trade, change settings, or set up the session.

The gate lets a read-only app, and every app while trading is halted, send only READ requests:
the table below is an explicit allow list, and an id it does not hold (a newer API's request,
or garbage) is refused. Keys are message ids as `codec.message_id` returns them: a protobuf
request (wire id above 200) has the same id as its text form. Names are the official client's
method names, for audit and log texts. tests/tws/test_requests_policy.py checks the table
against every request id the installed ibapi defines or sends, and ib_async sends.
"""

from __future__ import annotations

from enum import Enum


class Kind(str, Enum):  # a StrEnum (Python 3.11+), also on 3.10 (Ubuntu 22.04's)
    READ = "read"  # reads data or ends a read subscription; changes nothing on the gateway or account
    ORDER = "order"  # creates, changes or cancels orders, or exercises options (positions)
    SETTINGS = "settings"  # changes the gateway's settings, the account's FA setup, or what others see
    SESSION = "session"  # sets up or authenticates the API session (the gate handles START_API itself)

    def __str__(self) -> str:
        return self.value


READ, ORDER, SETTINGS, SESSION = Kind.READ, Kind.ORDER, Kind.SETTINGS, Kind.SESSION

# id: (ibapi OUT constant, EClient method, kind)
REQUESTS: dict[int, tuple[str, str, Kind]] = {
    1: ("REQ_MKT_DATA", "reqMktData", READ),
    2: ("CANCEL_MKT_DATA", "cancelMktData", READ),
    3: ("PLACE_ORDER", "placeOrder", ORDER),
    4: ("CANCEL_ORDER", "cancelOrder", ORDER),
    # Client id 0 also gets the manual TWS orders, and binds them to itself: see BINDS_FOR_CLIENT_ZERO.
    5: ("REQ_OPEN_ORDERS", "reqOpenOrders", READ),
    6: ("REQ_ACCT_DATA", "reqAccountUpdates", READ),
    7: ("REQ_EXECUTIONS", "reqExecutions", READ),
    8: ("REQ_IDS", "reqIds", READ),  # asks for the next valid order id; places nothing
    9: ("REQ_CONTRACT_DATA", "reqContractDetails", READ),
    10: ("REQ_MKT_DEPTH", "reqMktDepth", READ),
    11: ("CANCEL_MKT_DEPTH", "cancelMktDepth", READ),
    12: ("REQ_NEWS_BULLETINS", "reqNewsBulletins", READ),
    13: ("CANCEL_NEWS_BULLETINS", "cancelNewsBulletins", READ),
    # The gateway's API log level is global: it turns on logging of every client's messages.
    14: ("SET_SERVER_LOGLEVEL", "setServerLogLevel", SETTINGS),
    # autoBind=true binds every manual TWS order to client 0 from then on, for later sessions too.
    15: ("REQ_AUTO_OPEN_ORDERS", "reqAutoOpenOrders", SETTINGS),
    16: ("REQ_ALL_OPEN_ORDERS", "reqAllOpenOrders", READ),  # a one-off snapshot; binds nothing
    17: ("REQ_MANAGED_ACCTS", "reqManagedAccts", READ),
    18: ("REQ_FA", "requestFA", READ),  # reads the advisor's groups and allocation profiles
    19: ("REPLACE_FA", "replaceFA", SETTINGS),  # rewrites the advisor's groups and allocations
    20: ("REQ_HISTORICAL_DATA", "reqHistoricalData", READ),
    21: ("EXERCISE_OPTIONS", "exerciseOptions", ORDER),
    22: ("REQ_SCANNER_SUBSCRIPTION", "reqScannerSubscription", READ),
    23: ("CANCEL_SCANNER_SUBSCRIPTION", "cancelScannerSubscription", READ),
    24: ("REQ_SCANNER_PARAMETERS", "reqScannerParameters", READ),
    25: ("CANCEL_HISTORICAL_DATA", "cancelHistoricalData", READ),
    49: ("REQ_CURRENT_TIME", "reqCurrentTime", READ),
    50: ("REQ_REAL_TIME_BARS", "reqRealTimeBars", READ),
    51: ("CANCEL_REAL_TIME_BARS", "cancelRealTimeBars", READ),
    # Gone from ibapi-latest (IB ended the service), still sent by older clients such as ib_async.
    52: ("REQ_FUNDAMENTAL_DATA", "reqFundamentalData", READ),
    53: ("CANCEL_FUNDAMENTAL_DATA", "cancelFundamentalData", READ),
    54: ("REQ_CALC_IMPLIED_VOLAT", "calculateImpliedVolatility", READ),  # a model computation
    55: ("REQ_CALC_OPTION_PRICE", "calculateOptionPrice", READ),  # a model computation
    56: ("CANCEL_CALC_IMPLIED_VOLAT", "cancelCalculateImpliedVolatility", READ),
    57: ("CANCEL_CALC_OPTION_PRICE", "cancelCalculateOptionPrice", READ),
    58: ("REQ_GLOBAL_CANCEL", "reqGlobalCancel", ORDER),  # cancels every open order, of every client
    59: ("REQ_MARKET_DATA_TYPE", "reqMarketDataType", READ),  # live/frozen/delayed, for this connection only
    61: ("REQ_POSITIONS", "reqPositions", READ),
    62: ("REQ_ACCOUNT_SUMMARY", "reqAccountSummary", READ),
    63: ("CANCEL_ACCOUNT_SUMMARY", "cancelAccountSummary", READ),
    64: ("CANCEL_POSITIONS", "cancelPositions", READ),
    # Third-party (vendor) authentication: only meaningful before START_API, never a read.
    65: ("VERIFY_REQUEST", "verifyRequest", SESSION),
    66: ("VERIFY_MESSAGE", "verifyMessage", SESSION),
    67: ("QUERY_DISPLAY_GROUPS", "queryDisplayGroups", READ),
    # Receives the contract a TWS display group shows; changes nothing (updateDisplayGroup does).
    68: ("SUBSCRIBE_TO_GROUP_EVENTS", "subscribeToGroupEvents", READ),
    # Changes the contract shown in every TWS window linked to the group, other users' view included.
    69: ("UPDATE_DISPLAY_GROUP", "updateDisplayGroup", SETTINGS),
    70: ("UNSUBSCRIBE_FROM_GROUP_EVENTS", "unsubscribeFromGroupEvents", READ),
    71: ("START_API", "startApi", SESSION),  # the handshake: the gate admits or refuses it itself
    72: ("VERIFY_AND_AUTH_REQUEST", "verifyAndAuthRequest", SESSION),
    73: ("VERIFY_AND_AUTH_MESSAGE", "verifyAndAuthMessage", SESSION),
    74: ("REQ_POSITIONS_MULTI", "reqPositionsMulti", READ),
    75: ("CANCEL_POSITIONS_MULTI", "cancelPositionsMulti", READ),
    76: ("REQ_ACCOUNT_UPDATES_MULTI", "reqAccountUpdatesMulti", READ),
    77: ("CANCEL_ACCOUNT_UPDATES_MULTI", "cancelAccountUpdatesMulti", READ),
    78: ("REQ_SEC_DEF_OPT_PARAMS", "reqSecDefOptParams", READ),
    79: ("REQ_SOFT_DOLLAR_TIERS", "reqSoftDollarTiers", READ),
    80: ("REQ_FAMILY_CODES", "reqFamilyCodes", READ),
    81: ("REQ_MATCHING_SYMBOLS", "reqMatchingSymbols", READ),
    82: ("REQ_MKT_DEPTH_EXCHANGES", "reqMktDepthExchanges", READ),
    83: ("REQ_SMART_COMPONENTS", "reqSmartComponents", READ),
    84: ("REQ_NEWS_ARTICLE", "reqNewsArticle", READ),
    85: ("REQ_NEWS_PROVIDERS", "reqNewsProviders", READ),
    86: ("REQ_HISTORICAL_NEWS", "reqHistoricalNews", READ),
    87: ("REQ_HEAD_TIMESTAMP", "reqHeadTimeStamp", READ),
    88: ("REQ_HISTOGRAM_DATA", "reqHistogramData", READ),
    89: ("CANCEL_HISTOGRAM_DATA", "cancelHistogramData", READ),
    90: ("CANCEL_HEAD_TIMESTAMP", "cancelHeadTimeStamp", READ),
    91: ("REQ_MARKET_RULE", "reqMarketRule", READ),
    92: ("REQ_PNL", "reqPnL", READ),
    93: ("CANCEL_PNL", "cancelPnL", READ),
    94: ("REQ_PNL_SINGLE", "reqPnLSingle", READ),
    95: ("CANCEL_PNL_SINGLE", "cancelPnLSingle", READ),
    96: ("REQ_HISTORICAL_TICKS", "reqHistoricalTicks", READ),
    97: ("REQ_TICK_BY_TICK_DATA", "reqTickByTickData", READ),
    98: ("CANCEL_TICK_BY_TICK_DATA", "cancelTickByTickData", READ),
    99: ("REQ_COMPLETED_ORDERS", "reqCompletedOrders", READ),
    100: ("REQ_WSH_META_DATA", "reqWshMetaData", READ),
    101: ("CANCEL_WSH_META_DATA", "cancelWshMetaData", READ),
    102: ("REQ_WSH_EVENT_DATA", "reqWshEventData", READ),
    103: ("CANCEL_WSH_EVENT_DATA", "cancelWshEventData", READ),
    104: ("REQ_USER_INFO", "reqUserInfo", READ),  # the white-branding id of the logged-in user
    105: ("REQ_CURRENT_TIME_IN_MILLIS", "reqCurrentTimeInMillis", READ),
    106: ("CANCEL_CONTRACT_DATA", "cancelContractData", READ),
    107: ("CANCEL_HISTORICAL_TICKS", "cancelHistoricalTicks", READ),
    # Reads the gateway's settings (trusted IPs, master client id, read-only flag); changes nothing.
    108: ("REQ_CONFIG", "reqConfig", READ),
    # Writes them: readOnlyApi, masterClientId, trustedIPs, socketPort, bypassOrderPrecautions, ...
    109: ("UPDATE_CONFIG", "updateConfig", SETTINGS),
}

# Reads that, sent by client id 0, also bind the manual TWS orders to it, for later sessions too.
BINDS_FOR_CLIENT_ZERO = frozenset({5})

# Ids older clients send that ibapi-latest no longer defines.
LEGACY = frozenset({52, 53})


def kind(msg_id: int) -> Kind | None:
    """The kind of request `msg_id`, or None for an id this table does not know."""
    entry = REQUESTS.get(msg_id)
    return entry[2] if entry else None


def is_read(msg_id: int, client_id: int | None = None) -> bool:
    """True only for a known pure read; pass the client id to catch client 0's binding reads."""
    if client_id == 0 and msg_id in BINDS_FOR_CLIENT_ZERO:
        return False
    return kind(msg_id) is READ


def name(msg_id: int) -> str:
    """The request's method name for audit texts, e.g. `placeOrder`, or `request 250` if unknown."""
    entry = REQUESTS.get(msg_id)
    return entry[1] if entry else f"request {msg_id}"


def refusal(msg_id: int, *, read_only: bool, halted: bool, client_id: int | None = None) -> str | None:
    """Why the gate refuses request `msg_id` from an app, or None when this table lets it pass.

    A read-only app, and any app while halted, may send known reads only (default-deny).
    Order requests from a trading app still go through the gate's order rules after this.
    """
    if is_read(msg_id, client_id):
        return None
    known = kind(msg_id)
    what = f"{name(msg_id)} ({known.value if known else 'unknown'} request)"
    if read_only:
        return f"{what} is not allowed for a read-only app"
    if halted:
        return f"{what} is not allowed while trading is halted"
    return None
