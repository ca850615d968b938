"""Shared fixtures: the repo's inventories, and a tool that renders them."""

from __future__ import annotations

from pathlib import Path

import pytest

from ibgw_provision import inventory
from ibgw_provision.render import render_host
from ibgw_provision.secrets import Secrets

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


def with_front(path: Path, kind: str, tmp: Path, gate: bool = False) -> Path:
    """A copy of an inventory whose hosts use the given front kind, and the gate if asked."""
    text = path.read_text().replace("kind: haproxy", f"kind: {kind}" + ("\n      gate: true" if gate else ""))
    out = tmp / f"{path.stem}-{kind}{'-gate' if gate else ''}.yml"
    out.write_text(text)
    return out


@pytest.fixture(scope="session")
def example():
    return inventory.load(INVENTORIES / "example.yml")


@pytest.fixture(scope="session")
def local():
    return inventory.load(INVENTORIES / "local.yml")


@pytest.fixture(scope="session")
def rendered(tmp_path_factory, example, local):
    """Every variant we ship, rendered once: name -> {target path: file}."""
    tmp = tmp_path_factory.mktemp("rendered")
    nginx = inventory.load(with_front(INVENTORIES / "example.yml", "nginx", tmp))
    gate = inventory.load(with_front(INVENTORIES / "example.yml", "haproxy", tmp, gate=True))
    nginx_gate = inventory.load(with_front(INVENTORIES / "example.yml", "nginx", tmp, gate=True))
    return {
        "example": render_to(example, "gw1", tmp / "example"),
        "example-nginx": render_to(nginx, "gw1", tmp / "example-nginx"),
        "example-gate": render_to(gate, "gw1", tmp / "example-gate"),
        "example-nginx-gate": render_to(nginx_gate, "gw1", tmp / "example-nginx-gate"),
        "local": render_to(local, "local", tmp / "local"),
    }
