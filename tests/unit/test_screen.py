"""`ibgw screen`, `ibgw vnc` and `ibgw audit HOST` without a host: XWD to PNG, arguments, audit queries."""

from __future__ import annotations

import json
import shlex
import struct
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from ibgw_provision import inventory
from ibgw_provision.cli import main
from ibgw_provision.observe import audit, screen
from ibgw_provision.provision import agent, layout
from ibgw_provision.provision.transport import Result
from tests.conftest import with_front

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "inventories" / "example.yml"
LOCAL = ROOT / "inventories" / "local.yml"
PIXELS = [[(255, 0, 0), (0, 255, 0), (0, 0, 255)], [(1, 2, 3), (250, 251, 252), (0, 0, 0)]]


def xwd(
    pixels, bpp: int = 32, msb: bool = False, ncolors: int = 0, pad: int = 4, name: bytes = b"x\0"
) -> bytes:
    """An XWD file as `xwd -root` writes one: a big-endian header, the window name, a colormap, pixels."""
    height, width = len(pixels), len(pixels[0])
    stride = width * bpp // 8 + pad
    masks = (0xFF0000, 0xFF00, 0xFF)
    header = [100 + len(name), 7, 2, 24, width, height, 0, int(msb), 32, int(msb), 32, bpp, stride, 4]
    header += [*masks, 8, 256, ncolors, width, height, 0, 0, 0]
    rows = b""
    for row in pixels:
        for r, g, b in row:
            value = (r << 16) | (g << 8) | b
            size = bpp // 8
            rows += value.to_bytes(4, "big")[4 - size :] if msb else value.to_bytes(4, "little")[:size]
        rows += b"\xee" * pad
    return struct.pack(">25I", *header) + name + b"\0" * 12 * ncolors + rows


def read_png(data: bytes) -> tuple[int, int, list[list[tuple[int, int, int]]]]:
    """Width, height and pixels of an 8-bit RGB PNG with filter 0, checking each chunk's CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (size,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + size]
        assert struct.unpack(">I", data[pos + 8 + size : pos + 12 + size])[0] == zlib.crc32(kind + body)
        chunks[kind] = chunks.get(kind, b"") + body
        pos += 12 + size
    width, height, depth, color = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, color) == (8, 2) and b"IEND" in chunks
    raw = zlib.decompress(chunks[b"IDAT"])
    rows = [raw[y * (width * 3 + 1) : (y + 1) * (width * 3 + 1)] for y in range(height)]
    assert all(row[0] == 0 for row in rows)
    return width, height, [[tuple(row[1 + 3 * x : 4 + 3 * x]) for x in range(width)] for row in rows]


@pytest.mark.parametrize("bpp,msb", [(32, False), (32, True), (24, False), (24, True)])
def test_xwd_becomes_the_same_pixels_as_png(bpp, msb):
    image = screen.parse_xwd(xwd(PIXELS, bpp, msb, ncolors=3))
    assert (image.width, image.height) == (3, 2)
    assert read_png(image.png()) == (3, 2, PIXELS)


@pytest.mark.parametrize(
    "data,message",
    [
        (b"short", "too short"),
        (xwd(PIXELS)[:4] + struct.pack(">I", 6) + xwd(PIXELS)[8:], "version 6"),
        (xwd(PIXELS)[:44] + struct.pack(">I", 16) + xwd(PIXELS)[48:], "16 bits per pixel"),
        (xwd(PIXELS)[:-10], "truncated"),
        (xwd(PIXELS)[:56] + struct.pack(">I", 0xF800) + xwd(PIXELS)[60:], "mask 0xf800"),
    ],
)
def test_what_cannot_be_converted_is_named(data, message):
    with pytest.raises(screen.ScreenError, match=message):
        screen.parse_xwd(data)


def test_displays_follow_the_order_render_gives_them():
    host = inventory.load(EXAMPLE).hosts["gw1"]
    assert [screen.display(host, g.mode) for g in host.gateways] == [101, 102]


def test_the_agent_and_the_operator_ask_for_the_same_things():
    host = inventory.load(EXAMPLE).hosts["gw1"]
    request = screen._request(host, "live", "screen")
    assert request == {"op": "screen", "unit": layout.xvfb_unit("live"), "display": 102, "user": layout.USER}
    assert {"screen", "vnc", "relay"} <= set(agent.__dict__)


def _run(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize("command", ["screen", "vnc"])
def test_screen_and_vnc_refuse_a_host_without_a_display_before_connecting(command):
    result = _run(command, "local", "paper", "-i", str(LOCAL))
    assert result.exit_code == 2 and "the simulator backend has no display" in result.output
    result = _run(command, "nohost", "paper", "-i", str(EXAMPLE))
    assert result.exit_code == 2 and "no host named 'nohost'" in result.output
    result = _run(command, "gw1", "demo", "-i", str(EXAMPLE))
    assert result.exit_code == 2 and "'demo' is not one of 'paper', 'live'" in result.output


def test_screen_needs_an_inventory():
    result = _run("screen", "gw1", "paper")
    assert result.exit_code == 2 and "Missing option '-i'" in result.output


@pytest.mark.parametrize(
    "args,message",
    [
        ([], "give HOST -i INVENTORY"),
        (["gw1"], "give HOST -i INVENTORY"),
        (["gw1", "-i", str(EXAMPLE), "--config", "/etc/ibgw/gate-paper.yml"], "not both"),
        (["--since", "yesterday", "--config", "x.yml"], "neither an ISO time"),
        (["gw1", "-i", str(EXAMPLE), "--mode", "demo"], "'demo' is not one of"),
    ],
)
def test_audit_arguments(args, message):
    result = _run("audit", *args)
    assert result.exit_code == 2 and message in result.output


def test_audit_of_a_host_without_a_gate_is_bad_input(tmp_path):
    path = with_front(EXAMPLE, "haproxy", tmp_path, gate=False)
    result = _run("audit", "gw1", "-i", str(path))
    assert result.exit_code == 2 and "no gate on this host" in result.output


def test_the_on_host_form_still_reads_a_config(tmp_path):
    result = _run("audit", "--config", str(tmp_path / "missing.yml"))
    assert result.exit_code == 2 and "missing.yml" in result.output


def test_the_audit_command_on_the_host():
    since = datetime(2026, 11, 28, 16, 0, tzinfo=UTC)
    argv = shlex.split(audit.command("live", "smart-lean-0dte", since))
    assert argv[:5] == [f"{layout.VENV}/bin/ibgw", "audit", "--config", layout.gate_config("live"), "--json"]
    assert argv[5:7] == ["--app", "smart-lean-0dte"]
    assert argv[7] == "--since" and datetime.fromisoformat(argv[8]) == since
    assert "--app" not in audit.command("paper", None, None)  # sudo, when needed: remote.as_root


class FakeTransport:
    """Answers `ibgw audit --json` per mode as the host would."""

    answers: dict[str, dict] = {}
    commands: list[str] = []

    login_user = "root"  # as remote.as_root sees it: no sudo

    def __init__(self, target, connect_timeout):
        self.target = target

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def run(self, command: str, stdin: bytes = b"", timeout: float = 0) -> Result:
        FakeTransport.commands.append(command)
        mode = "live" if "gate-live" in command else "paper"
        answer = self.answers.get(mode)
        if answer is None:
            return Result(1, "", "Error: cannot read the audit log /var/lib/ibgw/gate/live.sqlite: no such\n")
        return Result(0, json.dumps(answer), "")


def _rows(at: str, decision: str) -> dict:
    order = {"at": at, "app": "a", "client_id": 1, "order_id": 7, "decision": decision, "reason": None}
    return {"connections": [{"started": at, "app": "a", "outcome": "accepted"}], "orders": [order]}


def test_audit_of_every_mode_is_merged_by_time_with_its_mode(monkeypatch):
    monkeypatch.setattr(audit, "Transport", FakeTransport)
    FakeTransport.commands = []
    FakeTransport.answers = {
        "paper": _rows("2026-11-28T16:00:02.000000Z", "refused"),
        "live": _rows("2026-11-28T16:00:01.000000Z", "forwarded"),
    }
    inv = inventory.load(EXAMPLE)
    rows = audit.read(inv, "gw1", audit.modes(inv.hosts["gw1"], None), None, None, 5)
    assert [(r["mode"], r["decision"]) for r in rows["orders"]] == [
        ("live", "forwarded"),
        ("paper", "refused"),
    ]
    assert [r["mode"] for r in rows["connections"]] == ["live", "paper"]
    assert len(FakeTransport.commands) == 2


def test_audit_failure_names_the_mode_and_the_reason(monkeypatch):
    monkeypatch.setattr(audit, "Transport", FakeTransport)
    FakeTransport.answers = {"paper": _rows("2026-11-28T16:00:02.000000Z", "refused")}
    inv = inventory.load(EXAMPLE)
    with pytest.raises(
        audit.AuditError, match="gw1: the live gate's audit: Error: cannot read the audit log"
    ):
        audit.read(inv, "gw1", ["paper", "live"], None, None, 5)
    assert audit.modes(inv.hosts["gw1"], "live") == ["live"]
