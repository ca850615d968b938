"""`python -m ibgw_provision.gate gate|audit ...`: the gate's commands without the main CLI."""

import click

from .cli import audit, gate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """The TWS API gate and its audit log."""


main.add_command(gate)
main.add_command(audit)

main()
