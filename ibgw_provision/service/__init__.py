"""What the long-running ibgw services (sim, gate) share: start-up, signals, readiness, admin socket."""
