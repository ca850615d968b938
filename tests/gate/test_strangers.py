"""Strangers' refused logons: counted, and audited as at most one row per source per window."""

import asyncio

from ibgw_provision.gate.strangers import OTHERS, Strangers


class Rows:
    """An audit log's connection rows, kept in a list."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []

    async def connection(self, app, client_id, source, version, outcome, reason=None, cert_serial=None):
        self.rows.append((source, client_id, reason))
        return len(self.rows)


def test_one_row_per_source_per_window_and_the_count_after_it():
    strangers, audit = Strangers(window=0.2, max_sources=2), Rows()

    async def scenario():
        for n in range(5):
            assert await strangers.refused_logon(audit, "a", "a:1", 9, 200, f"r{n}") == (n == 0)
        await strangers.refused_logon(audit, "b", "b:1", 8, 200, "rb")
        await strangers.refused_logon(audit, "c", "c:1", 7, 200, "rc")  # over max_sources: as OTHERS
        await strangers.refused_logon(audit, "d", "d:1", 6, 200, "rd")
        await asyncio.sleep(0.25)
        await strangers.refused_logon(audit, "b", "b:2", 8, 200, "rb2")  # the window has passed
        await strangers.flush_all(audit)

    asyncio.run(scenario())
    summary = (
        "{} more refused logons from this source (a client id not registered here, or a source no app may "
        "use), not recorded one by one; the last: {}"
    )
    assert audit.rows == [
        ("a:1", 9, "r0"),
        ("b:1", 8, "rb"),
        ("c:1", 7, "rc"),  # the first of the sources beyond max_sources, all counted together
        ("a", 9, summary.format(4, "r4")),  # the window passed: a's count; b was quiet and is forgotten
        (OTHERS, 6, summary.format(1, "rd")),
        (OTHERS, 8, summary.format(1, "rb2")),  # at the stop; b came back while the table was full
    ]
    assert strangers.refused == 9
