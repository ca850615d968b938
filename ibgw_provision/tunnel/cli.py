"""`ibgw tunnel`: run the tunnel in the foreground, or print its stunnel configuration or systemd unit."""

from __future__ import annotations

import logging
import shutil
import ssl
import sys
from pathlib import Path

import click
import jinja2

from ..service import runner
from .tunnel import FILES, IB_PORTS, Endpoint, Tunnel, client_context

log = logging.getLogger("ibgw.tunnel")


def _templates() -> jinja2.Environment:
    package = Path(__file__).resolve().parents[1]
    packaged = package / "templates"  # in a built wheel
    root = packaged if packaged.is_dir() else package.parent / "templates"
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(root / "tunnel"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def _endpoint(_ctx, param, value: str | None) -> Endpoint | None:
    if value is None:
        return None
    try:
        return Endpoint.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param=param) from None


def _ibgw() -> str:
    """This installation's `ibgw`, by absolute path (what a unit's ExecStart needs)."""
    beside = Path(sys.executable).with_name("ibgw")  # the virtualenv's own
    return str(beside if beside.is_file() else Path(shutil.which("ibgw") or sys.argv[0]).resolve())


@click.command()
@click.option("--front", required=True, callback=_endpoint, help="The ibgw front, HOST:PORT (front.tls).")
@click.option(
    "--cert",
    "cert_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The app's folder from `ibgw pki issue`: cert.pem, key.pem, ca.pem.",
)
@click.option("--listen", callback=_endpoint, help="Local address [default: 127.0.0.1:<the mode's IB port>].")
@click.option("--mode", type=click.Choice(["paper", "live"]), default="paper", show_default=True)
@click.option("--print-stunnel", is_flag=True, help="Print the equivalent stunnel configuration and exit.")
@click.option("--print-unit", is_flag=True, help="Print a systemd unit running this tunnel and exit.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def tunnel(
    front: Endpoint,
    cert_dir: Path,
    listen: Endpoint | None,
    mode: str,
    print_stunnel: bool,
    print_unit: bool,
    verbose: bool,
) -> None:
    """On an app's machine: listen on 127.0.0.1 and carry each TWS API connection over TLS, with
    the app's certificate, to the ibgw front. Clients connect to localhost as to a local gateway."""
    listen = listen or Endpoint("127.0.0.1", IB_PORTS[mode])
    cert_dir = cert_dir.expanduser().resolve()
    values = {
        "front": str(front),
        "front_host": front.host,
        "front_is_ip": front.is_ip,
        "listen": str(listen),
    }
    values |= {"mode": mode, "cert_dir": cert_dir, "ibgw": _ibgw()}
    values |= {"cert": cert_dir / "cert.pem", "key": cert_dir / "key.pem", "ca": cert_dir / "ca.pem"}
    if print_stunnel or print_unit:
        name = "stunnel.conf.j2" if print_stunnel else "ibgw-tunnel.service.j2"
        click.echo(_templates().get_template(name).render(values), nl=False)
        return
    missing = [f for f in FILES if not (cert_dir / f).is_file()]
    if missing:
        raise click.UsageError(f"{cert_dir} lacks {', '.join(missing)} (from `ibgw pki issue APP`)")
    try:
        context = client_context(cert_dir)
    except (OSError, ssl.SSLError) as exc:
        raise click.ClickException(f"cannot load the certificate in {cert_dir}: {exc}") from None
    runner.run(_serve(Tunnel(listen, front, context)), "ibgw-tunnel", verbose, fast=True)


async def _serve(t: Tunnel) -> None:
    async def start() -> None:
        try:
            await t.start()
        except OSError as exc:
            raise click.ClickException(f"cannot listen on {t.listen}: {exc}") from None

    await runner.serve(start, t.stop, log)
