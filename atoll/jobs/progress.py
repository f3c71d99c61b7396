"""The runner's display: one row per step, one column per party (rich).

Reads the parties' events from the run store (the same in threads and processes
mode). On a terminal it is a live table; otherwise one line per event.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table as RichTable

from atoll.jobs.spec import JobSpec
from atoll.jobs.store import RunStore, as_store

_STYLE = {"waiting": "dim", "running": "yellow", "done": "green", "skipped": "cyan", "failed": "bold red"}


class Monitor:
    def __init__(self, job: JobSpec, run_dir: RunStore | Path, steps: list[str], enabled: bool = True,
                 console: Console | None = None, interval: float = 0.25, heartbeat: float = 30.0):
        self.job, self.store, self.steps = job, as_store(run_dir), steps
        self.enabled = enabled
        self.console = console or Console()
        self.interval = interval
        self.heartbeat = heartbeat
        self.state: dict[tuple[str, str], dict[str, Any]] = {}
        self._offsets: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _poll(self) -> list[dict[str, Any]]:
        new = []
        for party in self.job.parties:
            events, self._offsets[party] = self.store.party(party).events(self._offsets.get(party, 0))
            for ev in events:
                new.append(ev)
                key = (ev["step"], ev["party"])
                st = self.state.setdefault(key, {"status": "waiting"})
                if ev["event"] == "start":
                    st.update(status="running", t0=ev["t"])
                elif ev["event"] == "progress":
                    st.update(fraction=ev.get("fraction"), note=ev.get("note", ""))
                elif ev["event"] in ("done", "skipped", "failed"):
                    st.update(status=ev["event"], seconds=ev.get("seconds"), cause=ev.get("cause"))
        return new

    def _cell(self, step: str, party: str) -> str:
        st = self.state.get((step, party), {"status": "waiting"})
        s = st["status"]
        text = s
        if s == "running":
            text = f"running {time.time() - st.get('t0', time.time()):.0f}s"
            if st.get("note"):
                text += f" {st['note']}"
            elif st.get("fraction") is not None:
                text += f" {100 * st['fraction']:.0f}%"
        elif s == "done" and st.get("seconds") is not None:
            text = f"done {st['seconds']:.1f}s"
        return f"[{_STYLE[s]}]{text}[/]"

    def table(self) -> RichTable:
        t = RichTable(title=f"job {self.job.name} — {self.store}")
        t.add_column("step")
        t.add_column("component")
        for p in self.job.parties:
            t.add_column(f"{p} ({self.job.parties[p].role})")
        for step in self.steps:
            t.add_row(step, self.job.component(step).component, *[self._cell(step, p) for p in self.job.parties])
        return t

    def _loop_live(self) -> None:
        with Live(self.table(), console=self.console, refresh_per_second=4, transient=False) as live:
            while not self._stop.is_set():
                self._poll()
                live.update(self.table())
                self._stop.wait(self.interval)
            self._poll()
            live.update(self.table())

    def _heartbeat(self) -> None:
        running: dict[str, list[str]] = {}
        for (step, party), st in self.state.items():
            if st["status"] == "running":
                running.setdefault(step, []).append(party)
        for step, parties in running.items():
            t0 = min(self.state[(step, p)].get("t0", time.time()) for p in parties)
            notes = {p: self.state[(step, p)].get("note") for p in parties}
            where = ", ".join(f"{p} ({notes[p]})" if notes[p] else p for p in parties)
            self.console.print(f"[yellow]running[/] {step} ({self.job.component(step).component}) @ "
                               f"{where} for {time.time() - t0:.0f}s", highlight=False)

    def _loop_lines(self) -> None:
        last_beat = time.monotonic()
        while True:
            stopping = self._stop.is_set()
            if time.monotonic() - last_beat >= self.heartbeat:
                self._heartbeat()
                last_beat = time.monotonic()
            for ev in self._poll():
                if ev["event"] == "progress":  # shown by the heartbeat (epoch / round per party)
                    continue
                last_beat = time.monotonic()
                extra = f" {ev['seconds']:.1f}s" if ev.get("seconds") is not None else ""
                if ev.get("cause"):
                    extra += f" — {ev['cause']}"
                self.console.print(f"[{_STYLE.get(ev['event'], 'white')}]{ev['event']:>7}[/] "
                                   f"{ev['step']} ({ev['component']}) @ {ev['party']}{extra}",
                                   highlight=False)
            if stopping:
                return
            self._stop.wait(self.interval)

    def start(self) -> None:
        if not self.enabled:
            return
        target = self._loop_live if self.console.is_terminal else self._loop_lines
        self._thread = threading.Thread(target=target, daemon=True, name="atoll-progress")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
