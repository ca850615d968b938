"""Shared fixtures: the repo's inventories, and a tool that renders them."""

from __future__ import annotations

from pathlib import Path

import pytest

from ibgw_provision import inventory
from ibgw_provision.inventory.model import Pki as PkiDir
from ibgw_provision.inventory.secrets import Secrets
from ibgw_provision.pki.ca import Pki
from ibgw_provision.provision.render import render_host

pytest_plugins = ["tests.kit.fixtures", "tests.kit.lab"]  # sim, gate and lab fixtures, registered once

ROOT = Path(__file__).resolve().parent.parent
INVENTORIES = ROOT / "inventories"


def render_to(inv, host: str, out: Path) -> dict[str, Path]:
    """Render HOST under OUT at its target paths; return target path -> written file."""
    written = {}
    for f in render_host(inv, host, Secrets(masked=True)):
        target = out / f.path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f.content)
        written[f.path] = target
    return written


def with_front(path: Path, kind: str, tmp: Path, gate: bool = True) -> Path:
    """A copy of an inventory whose hosts use the given front kind, with or without the gate."""
    text = (
        path.read_text()
        .replace("kind: haproxy", f"kind: {kind}")
        .replace("gate: true", f"gate: {gate}".lower())
        .replace("tls: true", f"tls: {gate}".lower())  # the gate terminates front.tls
    )
    out = tmp / f"{path.stem}-{kind}{'' if gate else '-direct'}.yml"
    out.write_text(text)
    return out


@pytest.fixture(scope="session")
def example(tmp_path_factory):
    """inventories/example.yml, its app CA (front.tls) in a temporary pki directory."""
    inv = inventory.load(INVENTORIES / "example.yml")
    ca = Pki(tmp_path_factory.mktemp("pki") / "example")
    ca.init("example")
    for name, host in inv.hosts.items():
        ca.issue_server(name, host.address)
        for app in host.apps:
            ca.issue_app(app.name)
    return inv.model_copy(update={"pki": PkiDir(dir=ca.dir)})


@pytest.fixture(scope="session")
def local():
    return inventory.load(INVENTORIES / "local.yml")


@pytest.fixture(scope="session")
def rendered(tmp_path_factory, example, local):
    """Every variant we ship, rendered once: name -> {target path: file}."""
    tmp = tmp_path_factory.mktemp("rendered")
    example_file = INVENTORIES / "example.yml"
    variants = {
        "example-nginx": ("nginx", True),
        "example-direct": ("haproxy", False),
        "example-nginx-direct": ("nginx", False),
    }
    rendered = {"example": render_to(example, "gw1", tmp / "example")}
    for variant, (kind, gate) in variants.items():
        rendered[variant] = render_to(
            inventory.load(with_front(example_file, kind, tmp, gate)), "gw1", tmp / variant
        )
    lab = inventory.load(INVENTORIES / "lab.yml")
    return rendered | {
        "local": render_to(local, "local", tmp / "local"),
        "lab": render_to(lab, "gw", tmp / "lab"),
    }
