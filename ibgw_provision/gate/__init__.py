"""`ibgw gate`: a TWS API relay between the front and one gateway that enforces, per app, what the
inventory says.

The TWS API has no authentication: whoever reaches the port can log on with any client id and
trade. The gate admits a connection only for a registered client id from that app's sources
(the real source comes from the front's PROXY header), refuses a client id already connected,
and reads every order-affecting request (placeOrder, cancelOrder, reqGlobalCancel,
exerciseOptions; text and protobuf) to apply the app's rules: read-only, maximum quantity,
allowed security types, and a global kill switch. Refusals go back as TWS error messages the
client libraries surface. Everything else passes through byte for byte. Connections and order
requests are audited in SQLite, each order committed before it is forwarded.
"""
