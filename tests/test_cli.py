"""CLI habits: -h and --help everywhere, --version, --log-level, warnings above the live display."""

import logging
import sys

from typer.testing import CliRunner

import atoll
from atoll.cli import _StderrHandler, app

runner = CliRunner()


def test_short_help_and_version_exit_zero():
    for args in (["-h"], ["run", "-h"], ["node", "-h"], ["--help"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 0 and "Usage" in r.output, args
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == atoll.__version__


def test_log_level_sets_the_atoll_logger_and_refuses_unknown_levels():
    r = runner.invoke(app, ["--log-level", "debug", "version"])
    assert r.exit_code == 0 and logging.getLogger("atoll").level == logging.DEBUG
    r = runner.invoke(app, ["--log-level", "loud", "version"])
    assert r.exit_code == 2 and "loud" in r.output
    runner.invoke(app, ["--log-level", "warning", "version"])
    assert logging.getLogger("atoll").level == logging.WARNING
    assert sum(isinstance(h, _StderrHandler) for h in logging.getLogger("atoll").handlers) == 1


def test_warnings_follow_a_redirected_stderr(monkeypatch, capsys):
    """The live progress display redirects sys.stderr so that what is written goes above it: the handler
    must write to the stream of the moment, not to the one it saw when made."""
    handler = _StderrHandler()
    log = logging.getLogger("atoll.test_cli")
    log.addHandler(handler)
    try:
        class Proxy:
            def __init__(self):
                self.lines = []

            def write(self, s):
                self.lines.append(s)

            def flush(self):
                pass

        proxy = Proxy()
        monkeypatch.setattr(sys, "stderr", proxy)
        log.warning("rows without a match")
        assert any("rows without a match" in s for s in proxy.lines)
    finally:
        log.removeHandler(handler)
