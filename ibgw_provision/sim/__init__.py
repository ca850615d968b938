"""`ibgw sim`: a simulated IB Gateway speaking the real TWS API wire protocol.

Server versions 157..226 (default maximum 226, the top of ibapi-latest 10.51). ib_async
(offers 157..178) gets 178 and text everywhere; ibapi-latest gets 226. From version 201 message
ids are raw 4-byte integers. Requests are read in whichever form the client sends them: text
below the version in `tws.versions.PROTOBUF_REQUEST_SINCE`, protobuf from it. Responses switch
to protobuf at the version where the real gateway switches them (`PROTOBUF_RESPONSE_SINCE`):

    201  orderStatus, error, openOrder, openOrderEnd, execDetails, execDetailsEnd
    204  completedOrder, completedOrdersEnd
    205  contractData, contractDataEnd
    206  tickPrice, tickSize, tickOptionComputation, tickSnapshotEnd, marketDataType, tickReqParams
    207  managedAccounts, position, positionEnd, accountSummary(End), updateAccountValue,
         updatePortfolio, updateAccountTime, accountDownloadEnd, accountUpdateMulti(End)
    208  historicalData, historicalDataEnd
    211  commissionAndFeesReport
    212  securityDefinitionOptionParameter(End)
    213  nextValidId, currentTime, currentTimeInMillis

Requests served: startApi, reqCurrentTime(InMillis), reqIds, reqManagedAccts, reqContractDetails,
reqSecDefOptParams, reqMktData (streaming and snapshot) / cancelMktData, reqMarketDataType,
reqHistoricalData (without keepUpToDate), placeOrder (MKT and LMT, what-if, modify) / cancelOrder /
reqGlobalCancel, reqOpenOrders, reqAllOpenOrders, reqAutoOpenOrders, reqCompletedOrders,
reqExecutions, reqPositions / cancelPositions, reqAccountSummary / cancel,
reqAccountUpdates, reqAccountUpdatesMulti / cancel. Anything else gets error 321, the
connection stays up. Protobuf payloads use ibapi's generated modules (ibapi.protobuf).
"""
