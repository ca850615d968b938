"""ibgw: provision and run a shared Interactive Brokers Gateway host."""

__version__ = "0.1.0"
