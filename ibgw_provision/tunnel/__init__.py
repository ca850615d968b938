"""`ibgw tunnel`: on an app's machine, a local TWS API port carried over TLS to the front (front.tls)."""
