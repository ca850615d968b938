"""Everything the simulator sends, encoded for one connection's server version.

A message goes out as protobuf when `tws.versions.response_is_protobuf` says the real server
switches it at that version, otherwise as text fields laid out the way ibapi's decoder (and
ib_async's, which agrees up to its version 178) reads them at that version. Unset numbers are
written the way the Java server writes them (Double.MAX_VALUE, Integer.MAX_VALUE).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from ibapi.protobuf import (
    AccountDataEnd_pb2,
    AccountSummary_pb2,
    AccountSummaryEnd_pb2,
    AccountUpdateMulti_pb2,
    AccountUpdateMultiEnd_pb2,
    AccountUpdateTime_pb2,
    AccountValue_pb2,
    CommissionAndFeesReport_pb2,
    CompletedOrder_pb2,
    CompletedOrdersEnd_pb2,
    Contract_pb2,
    ContractData_pb2,
    ContractDataEnd_pb2,
    ContractDetails_pb2,
    CurrentTime_pb2,
    CurrentTimeInMillis_pb2,
    Execution_pb2,
    ExecutionDetails_pb2,
    ExecutionDetailsEnd_pb2,
    HistoricalData_pb2,
    HistoricalDataBar_pb2,
    HistoricalDataEnd_pb2,
    ManagedAccounts_pb2,
    MarketDataType_pb2,
    NextValidId_pb2,
    OpenOrder_pb2,
    OpenOrdersEnd_pb2,
    Order_pb2,
    OrderState_pb2,
    OrderStatus_pb2,
    PortfolioValue_pb2,
    Position_pb2,
    PositionEnd_pb2,
    SecDefOptParameter_pb2,
    SecDefOptParameterEnd_pb2,
    TickOptionComputation_pb2,
    TickPrice_pb2,
    TickReqParams_pb2,
    TickSize_pb2,
    TickSnapshotEnd_pb2,
)

from ..tws import replies
from ..tws import versions as V
from ..tws.codec import encode_protobuf, encode_text
from ..tws.fields import UNSET_DOUBLE, UNSET_DOUBLE_TEXT, UNSET_INTEGER
from ..tws.messages import In
from .broker import Execution, Order, Position
from .market import NEW_YORK, TIME_ZONE, Bar, Greeks
from .universe import Instrument

BBO_EXCHANGE = "9c0001"
SNAPSHOT_PERMISSIONS = 3
ORDER_TYPES = "DAY,GTC,IOC,LMT,MKT,WHATIF"
STOCK_EXCHANGES = (
    "SMART,AMEX,NYSE,CBOE,PHLX,ISE,CHX,ARCA,NASDAQ,DRCTEDGE,BEX,BATS,EDGEA,BYX,IEX,LTSE,PEARL,MEMX"
)
OPTION_EXCHANGES = (
    "SMART,AMEX,CBOE,PHLX,PSE,ISE,BOX,BATS,NASDAQOM,CBOE2,NASDAQBX,MIAX,GEMINI,EDGX,MERCURY,PEARL,EMERALD"
)
STOCK_MARKET_RULE, OPTION_MARKET_RULE = "26", "32"
VOLUME_LOT = 100  # volume ticks are in round lots below MARKET_DATA_VOLUMES_IN_SHARES


def _decimal(value: Decimal) -> str:
    return format(value, "f")


def _trading_hours(inst: Instrument, day: str) -> tuple[str, str]:
    """(tradingHours, liquidHours): options trade the regular session, ETFs also pre- and post-market."""
    trading = f"{day}:0930-{day}:1600" if inst.is_option else f"{day}:0400-{day}:2000"
    return trading, f"{day}:0930-{day}:1600"


def contract_pb(inst: Instrument, exchange: str | None = None, primary: bool = False):
    """The Contract message with the fields the text form of the same message carries: `exchange`
    overrides SMART (executions and positions name a venue), `primary` adds the listing exchange."""
    pb = Contract_pb2.Contract(
        conId=inst.con_id,
        symbol=inst.symbol,
        secType=inst.sec_type,
        strike=inst.strike,
        exchange=inst.exchange if exchange is None else exchange,
        currency=inst.currency,
        localSymbol=inst.local_symbol,
        tradingClass=inst.trading_class,
    )
    if inst.is_option:
        pb.lastTradeDateOrContractMonth, pb.right, pb.multiplier = (
            inst.expiry,
            inst.right,
            float(inst.multiplier),
        )
    if primary and inst.primary_exchange:
        pb.primaryExch = inst.primary_exchange
    return pb


def _details_pb(inst: Instrument):
    trading, liquid = _trading_hours(inst, inst.expiry or datetime.now(NEW_YORK).strftime("%Y%m%d"))
    pb = ContractDetails_pb2.ContractDetails(
        marketName=inst.trading_class,
        minTick=str(inst.min_tick),
        orderTypes=ORDER_TYPES,
        priceMagnifier=1,
        validExchanges=OPTION_EXCHANGES if inst.is_option else STOCK_EXCHANGES,
        longName=inst.long_name,
        timeZoneId=TIME_ZONE,
        tradingHours=trading,
        liquidHours=liquid,
        aggGroup=1,
        marketRuleIds=_market_rules(inst),
        minSize="1",
        sizeIncrement="1",
        suggestedSizeIncrement="1",
    )
    if inst.is_option:
        pb.underConId, pb.contractMonth, pb.realExpirationDate = (
            inst.under_con_id,
            inst.expiry[:6],
            inst.expiry,
        )
        pb.underSymbol, pb.underSecType = inst.symbol, "STK"
    else:
        pb.industry, pb.category, pb.stockType = "Funds", "Equity Fund", "ETF"
    return pb


def _market_rules(inst: Instrument) -> str:
    exchanges = OPTION_EXCHANGES if inst.is_option else STOCK_EXCHANGES
    rule = OPTION_MARKET_RULE if inst.is_option else STOCK_MARKET_RULE
    return ",".join([rule] * len(exchanges.split(",")))


class Encoder:
    """Encodes server messages for one connection at `version`."""

    def __init__(self, version: int):
        self.version = version
        self._protobuf = {msg_id for msg_id in In if V.response_is_protobuf(version, msg_id)}

    def _text(self, msg_id: In, values: Iterable[Any]) -> bytes:
        return encode_text(self.version, msg_id, values)

    def _pb(self, msg_id: In, message) -> bytes:
        return encode_protobuf(msg_id, message.SerializeToString())

    def _since(self, version: int, *values: Any) -> tuple:
        return values if self.version >= version else ()

    def _before(self, version: int, *values: Any) -> tuple:
        return values if self.version < version else ()

    # ---- connection ------------------------------------------------------------------------

    def error(self, req_id: int, code: int, text: str, advanced_json: str = "") -> bytes:
        return replies.error(self.version, req_id, code, text, advanced_json)

    def managed_accounts(self, accounts: Iterable[str]) -> bytes:
        joined = ",".join(accounts)
        if In.MANAGED_ACCTS in self._protobuf:
            return self._pb(In.MANAGED_ACCTS, ManagedAccounts_pb2.ManagedAccounts(accountsList=joined))
        return self._text(In.MANAGED_ACCTS, (1, joined))

    def next_valid_id(self, order_id: int) -> bytes:
        if In.NEXT_VALID_ID in self._protobuf:
            return self._pb(In.NEXT_VALID_ID, NextValidId_pb2.NextValidId(orderId=order_id))
        return self._text(In.NEXT_VALID_ID, (1, order_id))

    def current_time(self, seconds: int) -> bytes:
        if In.CURRENT_TIME in self._protobuf:
            return self._pb(In.CURRENT_TIME, CurrentTime_pb2.CurrentTime(currentTime=seconds))
        return self._text(In.CURRENT_TIME, (1, seconds))

    def current_time_millis(self, millis: int) -> bytes:
        if In.CURRENT_TIME_IN_MILLIS in self._protobuf:
            return self._pb(
                In.CURRENT_TIME_IN_MILLIS,
                CurrentTimeInMillis_pb2.CurrentTimeInMillis(currentTimeInMillis=millis),
            )
        return self._text(In.CURRENT_TIME_IN_MILLIS, (millis,))

    # ---- contracts -------------------------------------------------------------------------

    def contract_data(self, req_id: int, inst: Instrument) -> bytes:
        if In.CONTRACT_DATA in self._protobuf:
            contract = contract_pb(inst, primary=True)
            if inst.is_option:
                contract.lastTradeDate = inst.expiry
            return self._pb(
                In.CONTRACT_DATA,
                ContractData_pb2.ContractData(
                    reqId=req_id, contract=contract, contractDetails=_details_pb(inst)
                ),
            )
        d = _details_pb(inst)
        return self._text(
            In.CONTRACT_DATA,
            (
                *self._before(V.SIZE_RULES, 8),
                req_id,
                inst.symbol,
                inst.sec_type,
                inst.expiry,
                *self._since(V.LAST_TRADE_DATE, inst.expiry),
                inst.strike,
                inst.right,
                inst.exchange,
                inst.currency,
                inst.local_symbol,
                d.marketName,
                inst.trading_class,
                inst.con_id,
                inst.min_tick,
                *self._before(V.SIZE_RULES, 1),
                inst.multiplier,
                d.orderTypes,
                d.validExchanges,
                d.priceMagnifier,
                d.underConId,
                d.longName,
                inst.primary_exchange,
                d.contractMonth,
                d.industry,
                d.category,
                d.subcategory,
                d.timeZoneId,
                d.tradingHours,
                d.liquidHours,
                "",
                0,
                0,
                d.aggGroup,
                d.underSymbol,
                d.underSecType,
                d.marketRuleIds,
                d.realExpirationDate,
                d.stockType,
                *(
                    self._since(V.SIZE_RULES, d.minSize, d.sizeIncrement, d.suggestedSizeIncrement)
                    or self._since(V.FRACTIONAL_SIZE_SUPPORT, d.minSize)
                ),
                *self._since(V.INELIGIBILITY_REASONS, 0),
            ),
        )

    def contract_data_end(self, req_id: int) -> bytes:
        if In.CONTRACT_DATA_END in self._protobuf:
            return self._pb(In.CONTRACT_DATA_END, ContractDataEnd_pb2.ContractDataEnd(reqId=req_id))
        return self._text(In.CONTRACT_DATA_END, (1, req_id))

    def sec_def_opt_params(
        self,
        req_id: int,
        exchange: str,
        under_con_id: int,
        trading_class: str,
        multiplier: str,
        expirations: list[str],
        strikes: list[float],
    ) -> bytes:
        if In.SECURITY_DEFINITION_OPTION_PARAMETER in self._protobuf:
            return self._pb(
                In.SECURITY_DEFINITION_OPTION_PARAMETER,
                SecDefOptParameter_pb2.SecDefOptParameter(
                    reqId=req_id,
                    exchange=exchange,
                    underlyingConId=under_con_id,
                    tradingClass=trading_class,
                    multiplier=multiplier,
                    expirations=expirations,
                    strikes=strikes,
                ),
            )
        return self._text(
            In.SECURITY_DEFINITION_OPTION_PARAMETER,
            (
                req_id,
                exchange,
                under_con_id,
                trading_class,
                multiplier,
                len(expirations),
                *expirations,
                len(strikes),
                *strikes,
            ),
        )

    def sec_def_opt_params_end(self, req_id: int) -> bytes:
        if In.SECURITY_DEFINITION_OPTION_PARAMETER_END in self._protobuf:
            return self._pb(
                In.SECURITY_DEFINITION_OPTION_PARAMETER_END,
                SecDefOptParameterEnd_pb2.SecDefOptParameterEnd(reqId=req_id),
            )
        return self._text(In.SECURITY_DEFINITION_OPTION_PARAMETER_END, (req_id,))

    # ---- market data -----------------------------------------------------------------------

    def tick_req_params(self, req_id: int, min_tick: float) -> bytes:
        if In.TICK_REQ_PARAMS in self._protobuf:
            return self._pb(
                In.TICK_REQ_PARAMS,
                TickReqParams_pb2.TickReqParams(
                    reqId=req_id,
                    minTick=str(min_tick),
                    bboExchange=BBO_EXCHANGE,
                    snapshotPermissions=SNAPSHOT_PERMISSIONS,
                ),
            )
        return self._text(In.TICK_REQ_PARAMS, (req_id, min_tick, BBO_EXCHANGE, SNAPSHOT_PERMISSIONS))

    def market_data_type(self, req_id: int, data_type: int) -> bytes:
        if In.MARKET_DATA_TYPE in self._protobuf:
            return self._pb(
                In.MARKET_DATA_TYPE, MarketDataType_pb2.MarketDataType(reqId=req_id, marketDataType=data_type)
            )
        return self._text(In.MARKET_DATA_TYPE, (1, req_id, data_type))

    def tick_price(self, req_id: int, tick_type: int, price: float, size: int | None) -> bytes:
        if In.TICK_PRICE in self._protobuf:
            pb = TickPrice_pb2.TickPrice(reqId=req_id, tickType=tick_type, price=price, attrMask=0)
            if size is not None:
                pb.size = str(size)
            return self._pb(In.TICK_PRICE, pb)
        return self._text(In.TICK_PRICE, (6, req_id, tick_type, price, size or 0, 0))

    def tick_size(self, req_id: int, tick_type: int, size: int) -> bytes:
        if In.TICK_SIZE in self._protobuf:
            return self._pb(
                In.TICK_SIZE, TickSize_pb2.TickSize(reqId=req_id, tickType=tick_type, size=str(size))
            )
        return self._text(In.TICK_SIZE, (6, req_id, tick_type, size))

    def volume(self, shares: int) -> int:
        """A volume tick's value: round lots before version 220, shares from then on."""
        return shares if self.version >= V.MARKET_DATA_VOLUMES_IN_SHARES else shares // VOLUME_LOT

    def tick_option(self, req_id: int, tick_type: int, g: Greeks) -> bytes:
        values = (g.implied_vol, g.delta, g.price, 0.0, g.gamma, g.vega, g.theta, g.und_price)
        if In.TICK_OPTION_COMPUTATION in self._protobuf:
            return self._pb(
                In.TICK_OPTION_COMPUTATION,
                TickOptionComputation_pb2.TickOptionComputation(
                    reqId=req_id,
                    tickType=tick_type,
                    tickAttrib=0,
                    impliedVol=g.implied_vol,
                    delta=g.delta,
                    optPrice=g.price,
                    pvDividend=0.0,
                    gamma=g.gamma,
                    vega=g.vega,
                    theta=g.theta,
                    undPrice=g.und_price,
                ),
            )
        return self._text(In.TICK_OPTION_COMPUTATION, (req_id, tick_type, 0, *values))

    def tick_snapshot_end(self, req_id: int) -> bytes:
        if In.TICK_SNAPSHOT_END in self._protobuf:
            return self._pb(In.TICK_SNAPSHOT_END, TickSnapshotEnd_pb2.TickSnapshotEnd(reqId=req_id))
        return self._text(In.TICK_SNAPSHOT_END, (1, req_id))

    def historical_data(self, req_id: int, bars: list[Bar], dates: list[str], start: str, end: str) -> bytes:
        """The bars and the end marker (one message below version 196, two from then on)."""
        rows = [
            (d, b.open, b.high, b.low, b.close, b.volume, b.wap, b.count)
            for b, d in zip(bars, dates, strict=True)
        ]
        if In.HISTORICAL_DATA in self._protobuf:
            pb = HistoricalData_pb2.HistoricalData(
                reqId=req_id,
                historicalDataBars=[
                    HistoricalDataBar_pb2.HistoricalDataBar(
                        date=d, open=o, high=h, low=lo, close=c, volume=str(v), WAP=str(w), barCount=n
                    )
                    for d, o, h, lo, c, v, w, n in rows
                ],
            )
            return self._pb(In.HISTORICAL_DATA, pb) + self._pb(
                In.HISTORICAL_DATA_END,
                (HistoricalDataEnd_pb2.HistoricalDataEnd(reqId=req_id, startDateStr=start, endDateStr=end)),
            )
        flat = [value for row in rows for value in row]
        if self.version < V.HISTORICAL_DATA_END:
            return self._text(In.HISTORICAL_DATA, (req_id, start, end, len(rows), *flat))
        return self._text(In.HISTORICAL_DATA, (req_id, len(rows), *flat)) + self._text(
            In.HISTORICAL_DATA_END, (req_id, start, end)
        )

    # ---- orders ----------------------------------------------------------------------------

    def order_status(self, o: Order) -> bytes:
        if In.ORDER_STATUS in self._protobuf:
            return self._pb(
                In.ORDER_STATUS,
                OrderStatus_pb2.OrderStatus(
                    orderId=o.order_id,
                    status=o.status,
                    filled=_decimal(o.filled),
                    remaining=_decimal(o.remaining),
                    avgFillPrice=o.avg_fill_price,
                    permId=o.perm_id,
                    parentId=o.parent_id,
                    lastFillPrice=o.last_fill_price,
                    clientId=o.client_id,
                    whyHeld="",
                    mktCapPrice=0.0,
                ),
            )
        return self._text(
            In.ORDER_STATUS,
            (
                o.order_id,
                o.status,
                o.filled,
                o.remaining,
                o.avg_fill_price,
                o.perm_id,
                o.parent_id,
                o.last_fill_price,
                o.client_id,
                "",
                0.0,
            ),
        )

    def open_order(self, o: Order) -> bytes:
        if In.OPEN_ORDER in self._protobuf:
            return self._pb(
                In.OPEN_ORDER,
                OpenOrder_pb2.OpenOrder(
                    orderId=o.order_id,
                    contract=contract_pb(o.instrument),
                    order=_order_pb(o),
                    orderState=_order_state_pb(o, completed=False),
                ),
            )
        return self._text(In.OPEN_ORDER, self._open_order_fields(o))

    def open_order_end(self) -> bytes:
        if In.OPEN_ORDER_END in self._protobuf:
            return self._pb(In.OPEN_ORDER_END, OpenOrdersEnd_pb2.OpenOrdersEnd())
        return self._text(In.OPEN_ORDER_END, (1,))

    def completed_order(self, o: Order) -> bytes:
        if In.COMPLETED_ORDER in self._protobuf:
            order = _order_pb(o)
            order.ClearField("orderId")  # a completed order carries its permId, not the client's ids
            order.ClearField("clientId")
            order.filledQuantity, order.routeMarketableToBbo = _decimal(o.filled), 0
            return self._pb(
                In.COMPLETED_ORDER,
                CompletedOrder_pb2.CompletedOrder(
                    contract=contract_pb(o.instrument),
                    order=order,
                    orderState=_order_state_pb(o, completed=True),
                ),
            )
        return self._text(In.COMPLETED_ORDER, self._completed_order_fields(o))

    def completed_orders_end(self) -> bytes:
        if In.COMPLETED_ORDERS_END in self._protobuf:
            return self._pb(In.COMPLETED_ORDERS_END, CompletedOrdersEnd_pb2.CompletedOrdersEnd())
        return self._text(In.COMPLETED_ORDERS_END, ())

    def exec_details(self, req_id: int, e: Execution) -> bytes:
        o, inst = e.order, e.order.instrument
        when = e.time.strftime(f"%Y%m%d %H:%M:%S {TIME_ZONE}")
        exchange = "CBOE" if inst.is_option else inst.primary_exchange
        if In.EXECUTION_DATA in self._protobuf:
            return self._pb(
                In.EXECUTION_DATA,
                ExecutionDetails_pb2.ExecutionDetails(
                    reqId=req_id,
                    contract=contract_pb(inst, exchange),
                    execution=Execution_pb2.Execution(
                        orderId=o.order_id,
                        execId=e.exec_id,
                        time=when,
                        acctNumber=o.account,
                        exchange=exchange,
                        side=e.side,
                        shares=_decimal(e.shares),
                        price=e.price,
                        permId=o.perm_id,
                        clientId=o.client_id,
                        isLiquidation=False,
                        cumQty=_decimal(e.cum_qty),
                        avgPrice=e.avg_price,
                        orderRef=o.order_ref,
                        lastLiquidity=2,
                        isPriceRevisionPending=False,
                    ),
                ),
            )
        return self._text(
            In.EXECUTION_DATA,
            (
                req_id,
                o.order_id,
                *_contract_fields(inst, exchange),
                e.exec_id,
                when,
                o.account,
                exchange,
                e.side,
                e.shares,
                e.price,
                o.perm_id,
                o.client_id,
                0,
                e.cum_qty,
                e.avg_price,
                o.order_ref,
                "",
                0,
                "",
                2,
                *self._since(V.PENDING_PRICE_REVISION, 0),
                *self._since(V.SUBMITTER, ""),
            ),
        )

    def exec_details_end(self, req_id: int) -> bytes:
        if In.EXECUTION_DATA_END in self._protobuf:
            return self._pb(In.EXECUTION_DATA_END, ExecutionDetailsEnd_pb2.ExecutionDetailsEnd(reqId=req_id))
        return self._text(In.EXECUTION_DATA_END, (1, req_id))

    def commission_report(self, e: Execution) -> bytes:
        realized = UNSET_DOUBLE if e.realized_pnl is None else e.realized_pnl
        if In.COMMISSION_AND_FEES_REPORT in self._protobuf:
            return self._pb(
                In.COMMISSION_AND_FEES_REPORT,
                CommissionAndFeesReport_pb2.CommissionAndFeesReport(
                    execId=e.exec_id,
                    commissionAndFees=e.commission,
                    currency="USD",
                    realizedPNL=realized,
                    bondYield=UNSET_DOUBLE,
                ),
            )
        return self._text(
            In.COMMISSION_AND_FEES_REPORT, (1, e.exec_id, e.commission, "USD", realized, UNSET_DOUBLE, 0)
        )

    # ---- accounts and positions ------------------------------------------------------------

    def position(self, p: Position) -> bytes:
        inst, exchange = p.instrument, _position_exchange(p.instrument)
        if In.POSITION_DATA in self._protobuf:
            return self._pb(
                In.POSITION_DATA,
                Position_pb2.Position(
                    account=p.account,
                    contract=contract_pb(inst, exchange),
                    position=_decimal(p.quantity),
                    avgCost=p.avg_cost,
                ),
            )
        return self._text(
            In.POSITION_DATA, (3, p.account, *_contract_fields(inst, exchange), p.quantity, p.avg_cost)
        )

    def position_end(self) -> bytes:
        if In.POSITION_END in self._protobuf:
            return self._pb(In.POSITION_END, PositionEnd_pb2.PositionEnd())
        return self._text(In.POSITION_END, (1,))

    def portfolio_value(self, p: Position, price: float) -> bytes:
        inst = p.instrument
        value = float(p.quantity) * price * inst.size_multiplier
        unrealized = value - float(p.quantity) * p.avg_cost
        if In.PORTFOLIO_VALUE in self._protobuf:
            return self._pb(
                In.PORTFOLIO_VALUE,
                PortfolioValue_pb2.PortfolioValue(
                    contract=contract_pb(inst, "", primary=True),
                    position=_decimal(p.quantity),
                    marketPrice=price,
                    marketValue=value,
                    averageCost=p.avg_cost,
                    unrealizedPNL=unrealized,
                    realizedPNL=0.0,
                    accountName=p.account,
                ),
            )
        return self._text(
            In.PORTFOLIO_VALUE,
            (
                8,
                inst.con_id,
                inst.symbol,
                inst.sec_type,
                inst.expiry,
                inst.strike,
                inst.right,
                inst.multiplier,
                inst.primary_exchange,
                inst.currency,
                inst.local_symbol,
                inst.trading_class,
                p.quantity,
                price,
                value,
                p.avg_cost,
                unrealized,
                0.0,
                p.account,
            ),
        )

    def account_value(self, key: str, value: str, currency: str, account: str) -> bytes:
        if In.ACCT_VALUE in self._protobuf:
            return self._pb(
                In.ACCT_VALUE,
                AccountValue_pb2.AccountValue(key=key, value=value, currency=currency, accountName=account),
            )
        return self._text(In.ACCT_VALUE, (2, key, value, currency, account))

    def account_time(self, stamp: str) -> bytes:
        if In.ACCT_UPDATE_TIME in self._protobuf:
            return self._pb(In.ACCT_UPDATE_TIME, AccountUpdateTime_pb2.AccountUpdateTime(timeStamp=stamp))
        return self._text(In.ACCT_UPDATE_TIME, (1, stamp))

    def account_download_end(self, account: str) -> bytes:
        if In.ACCT_DOWNLOAD_END in self._protobuf:
            return self._pb(In.ACCT_DOWNLOAD_END, AccountDataEnd_pb2.AccountDataEnd(accountName=account))
        return self._text(In.ACCT_DOWNLOAD_END, (1, account))

    def account_summary(self, req_id: int, account: str, tag: str, value: str, currency: str) -> bytes:
        if In.ACCOUNT_SUMMARY in self._protobuf:
            return self._pb(
                In.ACCOUNT_SUMMARY,
                AccountSummary_pb2.AccountSummary(
                    reqId=req_id, account=account, tag=tag, value=value, currency=currency
                ),
            )
        return self._text(In.ACCOUNT_SUMMARY, (1, req_id, account, tag, value, currency))

    def account_summary_end(self, req_id: int) -> bytes:
        if In.ACCOUNT_SUMMARY_END in self._protobuf:
            return self._pb(In.ACCOUNT_SUMMARY_END, AccountSummaryEnd_pb2.AccountSummaryEnd(reqId=req_id))
        return self._text(In.ACCOUNT_SUMMARY_END, (1, req_id))

    def account_update_multi(self, req_id: int, account: str, key: str, value: str, currency: str) -> bytes:
        if In.ACCOUNT_UPDATE_MULTI in self._protobuf:
            return self._pb(
                In.ACCOUNT_UPDATE_MULTI,
                AccountUpdateMulti_pb2.AccountUpdateMulti(
                    reqId=req_id, account=account, modelCode="", key=key, value=value, currency=currency
                ),
            )
        return self._text(In.ACCOUNT_UPDATE_MULTI, (1, req_id, account, "", key, value, currency))

    def account_update_multi_end(self, req_id: int) -> bytes:
        if In.ACCOUNT_UPDATE_MULTI_END in self._protobuf:
            return self._pb(
                In.ACCOUNT_UPDATE_MULTI_END, AccountUpdateMultiEnd_pb2.AccountUpdateMultiEnd(reqId=req_id)
            )
        return self._text(In.ACCOUNT_UPDATE_MULTI_END, (1, req_id))

    # ---- text order layouts ----------------------------------------------------------------

    def _fa_fields(self) -> tuple:
        return (
            "",
            "",
            "",
            *self._before(V.FA_PROFILE_DESUPPORT, ""),
        )  # faGroup, faMethod, faPercentage[, faProfile]

    def _order_state_fields(self, o: Order) -> tuple:
        """status through warningText, as decodeWhatIfInfoAndCommissionAndFees reads them."""
        margins = _margin_texts(o)
        known = _commission_known(o)
        return (
            o.status,
            *margins,
            o.commission if known else UNSET_DOUBLE,
            UNSET_DOUBLE,
            UNSET_DOUBLE,
            "USD" if known else "",
            *self._since(V.FULL_ORDER_PREVIEW_FIELDS, "", *[UNSET_DOUBLE] * 9, "", "", 0),
            "",
        )

    def _open_order_fields(self, o: Order) -> tuple:
        """processOpenOrder's layout; one line per OrderDecoder step (or run of steps)."""
        return (
            o.order_id,
            *_contract_fields(o.instrument, o.instrument.exchange),
            *_order_head(o),
            o.client_id,
            o.perm_id,
            o.outside_rth,
            False,
            0.0,
            "",  # .. goodAfterTime
            "",
            *self._fa_fields(),
            "",  # sharesAllocation, FA params, modelCode
            "",
            "",
            UNSET_DOUBLE,
            "",
            0,
            "",
            -1,
            0,  # goodTillDate .. exemptCode, auctionStrategy
            *[UNSET_DOUBLE] * 5,  # startingPrice, stockRefPrice, delta, stockRangeLower, stockRangeUpper
            0,
            False,
            False,
            False,
            UNSET_INTEGER,
            0,  # displaySize, block, sweep, allOrNone, minQty, ocaType
            False,
            False,
            UNSET_DOUBLE,
            o.parent_id,
            0,  # eTradeOnly, firmQuoteOnly, nbboPriceCap, .. triggerMethod
            UNSET_DOUBLE,
            UNSET_INTEGER,
            "",
            UNSET_DOUBLE,
            False,
            UNSET_INTEGER,  # volatility .. referencePriceType
            UNSET_DOUBLE,
            UNSET_DOUBLE,
            UNSET_DOUBLE,
            UNSET_INTEGER,  # trail stop and percent, basis points
            "",
            0,
            0,
            0,  # combo legs description, legs, order legs, smart combo routing params
            UNSET_INTEGER,
            UNSET_INTEGER,
            UNSET_DOUBLE,
            "",
            False,  # scale sizes and increment, hedge, optOut
            "",
            "",
            False,
            False,
            "",
            False,  # clearing, notHeld, delta-neutral contract, algo, solicited
            o.what_if,
            *self._order_state_fields(o),
            False,
            False,  # whatIf, order state, randomize size/price
            0,
            "",
            *[UNSET_DOUBLE] * 6,
            0,  # conditions, adjusted order type .. adjustable trailing unit
            "",
            "",
            "",
            UNSET_DOUBLE,
            False,
            False,
            False,
            False,  # soft dollar tier, cashQty .. usePriceMgmtAlgo
            *self._since(V.DURATION, UNSET_INTEGER),
            *self._since(V.POST_TO_ATS, UNSET_INTEGER),
            *self._since(V.AUTO_CANCEL_PARENT, False),
            *self._peg_best_fields(),
            *self._since(V.CUSTOMER_ACCOUNT, ""),
            *self._since(V.PROFESSIONAL_CUSTOMER, False),
            *self._since(V.BOND_ACCRUED_INTEREST, ""),
            *self._since(V.INCLUDE_OVERNIGHT, False),
            *self._since(V.CME_TAGGING_FIELDS_IN_OPEN_ORDER, "", UNSET_INTEGER),
            *self._since(V.SUBMITTER, ""),
            *self._since(V.IMBALANCE_ONLY, False),
        )

    def _completed_order_fields(self, o: Order) -> tuple:
        """processCompletedOrderMsg's layout; one line per OrderDecoder step (or run of steps)."""
        return (
            *_contract_fields(o.instrument, o.instrument.exchange),
            *_order_head(o),
            o.perm_id,
            o.outside_rth,
            False,
            0.0,
            "",  # .. goodAfterTime
            *self._fa_fields(),
            "",
            "",
            "",
            UNSET_DOUBLE,
            "",
            0,
            "",
            -1,  # FA params, modelCode .. exemptCode
            *[UNSET_DOUBLE] * 5,  # startingPrice, stockRefPrice, delta, stockRangeLower, stockRangeUpper
            0,
            False,
            False,
            UNSET_INTEGER,
            0,
            0,  # displaySize, sweep, allOrNone, minQty, ocaType, triggerMethod
            UNSET_DOUBLE,
            UNSET_INTEGER,
            "",
            UNSET_DOUBLE,
            False,
            UNSET_INTEGER,  # volatility .. referencePriceType
            UNSET_DOUBLE,
            UNSET_DOUBLE,
            "",
            0,
            0,
            0,  # trail stop and percent, combo legs, smart combo params
            UNSET_INTEGER,
            UNSET_INTEGER,
            UNSET_DOUBLE,
            "",  # scale sizes and increment, hedgeType
            "",
            "",
            False,
            False,
            "",
            False,
            o.status,  # clearing, notHeld, delta-neutral, algo, solicited, status
            False,
            False,
            0,
            UNSET_DOUBLE,
            UNSET_DOUBLE,  # randomize size/price, conditions, trail stop, offset
            UNSET_DOUBLE,
            False,
            False,
            "",
            o.filled,
            0,  # cashQty .. isOmsContainer, autoCancelDate .. refFutures
            False,
            "",
            False,
            0,
            0,
            o.completed_time,
            o.status,  # autoCancelParent .. completed time and status
            *self._peg_best_fields(),
            *self._since(V.CUSTOMER_ACCOUNT, ""),
            *self._since(V.PROFESSIONAL_CUSTOMER, False),
            *self._since(V.SUBMITTER, ""),
        )

    def _peg_best_fields(self) -> tuple:
        return self._since(
            V.PEGBEST_PEGMID_OFFSETS, UNSET_INTEGER, UNSET_INTEGER, UNSET_DOUBLE, UNSET_DOUBLE, UNSET_DOUBLE
        )


def _contract_fields(inst: Instrument, exchange: str) -> tuple:
    """conId .. tradingClass as orders, executions and positions carry a contract."""
    return (
        inst.con_id,
        inst.symbol,
        inst.sec_type,
        inst.expiry,
        inst.strike,
        inst.right,
        inst.multiplier,
        exchange,
        inst.currency,
        inst.local_symbol,
        inst.trading_class,
    )


def _order_head(o: Order) -> tuple:
    """action .. orderRef: the order fields that open and completed orders share."""
    return (
        o.action,
        o.quantity,
        o.order_type,
        o.lmt_price or 0.0,
        0.0,
        o.tif,
        o.oca_group,
        o.account,
        "",
        0,
        o.order_ref,
    )


def _commission_known(o: Order) -> bool:
    """Commission is reported once the order filled, or estimated for a what-if order."""
    return o.status == "Filled" or o.what_if


def _position_exchange(inst: Instrument) -> str:
    return "" if inst.is_option else inst.primary_exchange


def _margin_texts(o: Order) -> tuple:
    """The nine what-if margin strings (before, change, after); unset unless this is a what-if order."""
    if o.margin is None:
        return (UNSET_DOUBLE_TEXT,) * 9
    return tuple(str(float(v)) for part in (o.margin.before, o.margin.change, o.margin.after) for v in part)


def _order_pb(o: Order):
    pb = Order_pb2.Order(
        clientId=o.client_id,
        orderId=o.order_id,
        permId=o.perm_id,
        parentId=o.parent_id,
        action=o.action,
        totalQuantity=_decimal(o.quantity),
        orderType=o.order_type,
        lmtPrice=o.lmt_price or 0.0,
        auxPrice=0.0,
        tif=o.tif,
        account=o.account,
        outsideRth=o.outside_rth,
        transmit=True,
        whatIf=o.what_if,
    )
    if o.order_ref:
        pb.orderRef = o.order_ref
    if o.oca_group:
        pb.ocaGroup = o.oca_group
    return pb


def _order_state_pb(o: Order, completed: bool):
    """Open orders carry commission and what-if margins; completed orders their completion time."""
    pb = OrderState_pb2.OrderState(status=o.status)
    if completed:
        pb.completedTime, pb.completedStatus = o.completed_time, o.status
        return pb
    if _commission_known(o):
        pb.commissionAndFees, pb.commissionAndFeesCurrency = o.commission, "USD"
    if o.margin is not None:
        (pb.initMarginBefore, pb.maintMarginBefore, pb.equityWithLoanBefore) = o.margin.before
        (pb.initMarginChange, pb.maintMarginChange, pb.equityWithLoanChange) = o.margin.change
        (pb.initMarginAfter, pb.maintMarginAfter, pb.equityWithLoanAfter) = o.margin.after
    return pb
