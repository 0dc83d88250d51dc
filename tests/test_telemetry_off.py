"""Without the otel extra: nothing of OpenTelemetry is imported, nothing breaks."""

from __future__ import annotations

import subprocess
import sys
import textwrap

_BLOCKED_RUN = textwrap.dedent(
    """
    import asyncio, sys

    class Blocker:
        # as if opentelemetry were not installed
        def find_spec(self, name, path=None, target=None):
            if name == "opentelemetry" or name.startswith("opentelemetry."):
                raise ModuleNotFoundError(f"No module named {name!r}")
            return None

    sys.meta_path.insert(0, Blocker())

    from ief_jobs import IefClient, TokenAuth, WatchHealth
    from ief_jobs.emulator import Emulator

    async def main():
        async with Emulator(projects=2, jobs=30) as emulator:
            async with IefClient(
                emulator.base_url, auth=TokenAuth(emulator.token), page_size=10
            ) as ief:
                assert ief._transport.telemetry is None
                n = len(await ief.list_jobs(emulator.project_ids[0]))
                n += await ief.count_jobs(emulator.project_ids[1])
                health = WatchHealth(1)
                async with ief.watch_jobs(
                    emulator.project_ids, health=health, emit_existing=True
                ) as events:
                    await anext(events)  # after the first round
        return n, health.rounds

    print(asyncio.run(main()))
    try:
        IefClient("http://127.0.0.1:1", auth=TokenAuth("t"), tracer_provider=object())
    except ImportError as exc:
        print("ImportError", exc)
    print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
    """
)


def test_nothing_of_opentelemetry_is_imported_without_it() -> None:
    """A listing, a count and a watch round run; no opentelemetry module is
    loaded; asking for a provider says which extra to install."""
    done = subprocess.run(  # noqa: S603 (our own interpreter)
        [sys.executable, "-c", _BLOCKED_RUN],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    listed, imported = done.stdout.splitlines()[0::2]
    assert ("(60, 1)", "[]") == (listed, imported)
    assert "pip install 'ief-jobs[otel]'" in done.stdout.splitlines()[1]
