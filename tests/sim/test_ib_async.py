"""ib_async (server version 178, text) against the simulator: a trading app's day."""

import asyncio
from datetime import datetime

from ib_async import IB, LimitOrder, MarketOrder, Option, Stock

from ibgw_provision.sim.market import NEW_YORK

from ..kit.sim import STEP, until


def trading_app(port: int, scenario, client_id: int = 1):
    """Run `scenario(ib)` with a connected IB, bounded in time, and disconnect."""

    async def main():
        ib = IB()
        await ib.connectAsync("127.0.0.1", port, clientId=client_id, timeout=STEP)
        try:
            return await scenario(ib)
        finally:
            ib.disconnect()

    return asyncio.run(asyncio.wait_for(main(), 30))


def test_connects_and_reads_accounts(sim):
    async def scenario(ib):
        assert ib.client.serverVersion() == 178
        assert ib.managedAccounts() == ["DU1234567"]
        summary = {v.tag: v.value for v in await ib.accountSummaryAsync()}
        assert float(summary["NetLiquidation"]) == 1_000_000

    trading_app(sim.port, scenario)


def test_spy_details_and_0dte_option_chain(sim):
    async def scenario(ib):
        [details] = await ib.reqContractDetailsAsync(Stock("SPY", "SMART", "USD"))
        assert (details.contract.conId, details.contract.primaryExchange, details.longName) == (
            756733,
            "ARCA",
            "SPDR S&P 500 ETF TRUST",
        )
        [chain, _] = await ib.reqSecDefOptParamsAsync("SPY", "", "STK", 756733)
        today = datetime.now(NEW_YORK).strftime("%Y%m%d")
        assert (chain.exchange, chain.expirations, chain.multiplier) == ("SMART", [today], "100")
        options = await ib.reqContractDetailsAsync(Option("SPY", today, exchange="SMART"))
        assert len(options) == 2 * len(chain.strikes)
        assert {d.contract.right for d in options} == {"C", "P"} and all(
            d.underConId == 756733 for d in options
        )
        [call] = await ib.qualifyContractsAsync(Option("SPY", today, 600, "C", "SMART"))
        assert call.localSymbol == f"SPY   {today[2:]}C00600000"

    trading_app(sim.port, scenario)


def test_streams_ticks(sim):
    async def scenario(ib):
        [spy] = await ib.qualifyContractsAsync(Stock("SPY", "SMART", "USD"))
        ticker, updates = ib.reqMktData(spy), []
        ticker.updateEvent += lambda t: updates.append((t.bid, t.ask, t.last))
        await until(lambda: len(updates) >= 5)
        assert all(0 < bid < ask for bid, ask, _ in updates)
        ib.cancelMktData(spy)
        snapshot = await ib.reqTickersAsync(spy)
        assert snapshot[0].close == 600.0

    trading_app(sim.port, scenario)


def test_market_order_fills_with_execution_and_position(sim):
    async def scenario(ib):
        [spy] = await ib.qualifyContractsAsync(Stock("SPY", "SMART", "USD"))
        trade = ib.placeOrder(spy, MarketOrder("BUY", 10))
        await until(
            lambda: (
                trade.orderStatus.status == "Filled"
                and trade.fills
                and trade.fills[0].commissionReport.commission > 0
            )
        )
        assert [e.status for e in trade.log][:2] == ["PendingSubmit", "Submitted"]
        fill = trade.fills[0]
        assert (fill.execution.shares, fill.execution.side, fill.execution.acctNumber) == (
            10,
            "BOT",
            "DU1234567",
        )
        await until(lambda: [(p.contract.conId, p.position) for p in ib.positions()] == [(756733, 10)])
        assert [f.execution.execId for f in await ib.reqExecutionsAsync()] == [fill.execution.execId]

    trading_app(sim.port, scenario)


def test_limit_order_rests_then_cancels(sim):
    async def scenario(ib):
        [spy] = await ib.qualifyContractsAsync(Stock("SPY", "SMART", "USD"))
        trade = ib.placeOrder(spy, LimitOrder("BUY", 5, 100.0))
        await until(lambda: trade.orderStatus.status == "Submitted")
        assert [t.order.orderId for t in await ib.reqAllOpenOrdersAsync()] == [trade.order.orderId]
        ib.cancelOrder(trade.order)
        await until(lambda: trade.orderStatus.status == "Cancelled")
        assert not trade.fills

    trading_app(sim.port, scenario)


def test_what_if_and_history(sim):
    async def scenario(ib):
        [spy] = await ib.qualifyContractsAsync(Stock("SPY", "SMART", "USD"))
        state = await ib.whatIfOrderAsync(spy, MarketOrder("BUY", 100))
        assert float(state.initMarginChange) > 0 and state.commission == 1.0
        bars = await ib.reqHistoricalDataAsync(spy, "", "1 D", "5 mins", "TRADES", True)
        assert len(bars) == 78 and all(b.low <= b.open <= b.high for b in bars)
        assert not ib.openTrades()

    trading_app(sim.port, scenario)
