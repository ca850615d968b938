"""`python -m ibgw_provision.sim`: the same as `ibgw sim`."""

from .cli import sim

sim(prog_name="python -m ibgw_provision.sim")
