"""Three nodes as separate OS processes, driven the way their operators drive them.

:func:`walkthrough_blocks` reads the README's "Deploying across organisations" blocks
(between ``<!-- walkthrough -->`` markers; each block's first line names its terminal);
:class:`Terminal` is one operator's shell (a persistent bash, so ``export`` and ``JOB=``
carry over between blocks, as in a real terminal). The README's fixed ports are mapped to
free ones; nothing else in the commands changes.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README_PORTS = (7001, 7002, 7003, 8001, 8002, 8003)


def walkthrough_blocks(readme: Path = ROOT / "README.md") -> list[tuple[str, list[str]]]:
    text = readme.read_text()
    section = text.split("<!-- walkthrough -->", 1)[1].split("<!-- /walkthrough -->", 1)[0]
    out = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        lines = block.strip("\n").splitlines()
        terminal = lines[0].lstrip("# ").strip()
        out.append((terminal, [ln for ln in lines[1:] if ln.strip()]))
    return out


def free_ports(n: int) -> list[int]:
    import socket

    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


class Terminal:
    """A persistent bash: run(command) returns (exit code, output)."""

    def __init__(self, name: str, cwd: Path, env: dict[str, str]):
        self.name = name
        self.proc = subprocess.Popen(["bash", "--noprofile", "--norc"], cwd=cwd, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.transcript: list[str] = []

    def run(self, command: str, timeout: float = 600) -> tuple[int, str]:
        marker = f"__atoll_done_{uuid.uuid4().hex}__"
        # background jobs must not hold the shell's stdout (their output goes to their --log)
        cmd = command if not command.rstrip().endswith("&") else command.rstrip()[:-1] + " >/dev/null 2>&1 &"
        self.proc.stdin.write(f"{cmd}\necho {marker}$?\n")
        self.proc.stdin.flush()
        out, end = [], time.monotonic() + timeout
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"terminal {self.name}: shell exited during {command!r}: {''.join(out)}")
            if line.startswith(marker):
                rc = int(line[len(marker):].strip() or 0)
                break
            out.append(line)
            if time.monotonic() > end:
                raise TimeoutError(f"terminal {self.name}: {command!r} took over {timeout} s")
        text = "".join(out)
        self.transcript.append(f"$ {command}\n{text}[exit {rc}]")
        return rc, text

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        self.proc.wait(timeout=10)


def env_for(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATOLL_")}
    env["PATH"] = f"{ROOT / '.venv' / 'bin'}:{env.get('PATH', '')}"
    env["ATOLL_CREDENTIALS"] = str(tmp / "credentials.json")
    return env


def map_ports(command: str, ports: dict[int, int]) -> str:
    for old, new in ports.items():
        command = re.sub(rf"(?<=:){old}\b", str(new), command)
    return command


def stop_node(folder: Path, sig: int = signal.SIGTERM, wait: float = 20) -> None:
    pid_file = folder / "node.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pid_file.unlink(missing_ok=True)
        return
    end = time.monotonic() + wait
    while time.monotonic() < end:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our child (start_node): reaped, so gone
                break
        except ChildProcessError:
            pass  # started by a terminal's shell: not our child
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
    if sig == signal.SIGKILL:
        pid_file.unlink(missing_ok=True)


def start_node(folder: Path, env: dict[str, str]) -> subprocess.Popen:
    (folder / "node.pid").unlink(missing_ok=True)
    return subprocess.Popen(["atoll", "node", "start", "--config", str(folder / "node.yaml"), "--log",
                             str(folder / "node.log")], cwd=folder.parent, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for(predicate, timeout: float, what: str, every: float = 0.3):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        last = predicate()
        if last:
            return last
        time.sleep(every)
    raise TimeoutError(f"{what} did not happen within {timeout} s (last: {last!r})")
