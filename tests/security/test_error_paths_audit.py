"""Wire audit of every error path that tells a peer about a failure (issue 19): the reason a
party hands to ``abort`` is a failure summary (category and step) or its caller's, never
exception text built on the spot."""

from __future__ import annotations

import ast
from pathlib import Path

import wire_audit

PACKAGE = Path(__file__).resolve().parents[2] / "atoll"

#: where a reason arrives already summarised from another process of the same party: the node's
#: task relay forwards what its worker sent (the worker passes failure_summary, audited above)
RELAYS = {("node/executor.py", "_handle")}


def test_every_abort_reason_is_a_failure_summary():
    paths = wire_audit.error_paths(PACKAGE)
    assert len(paths) >= 8  # launch, runner, hfl, psi, node worker and relay, the endpoints
    bad = []
    for path, line, fn, arg in paths:
        where = (str(path.relative_to(PACKAGE)), fn.name)
        if where in RELAYS:
            assert ast.unparse(arg) == "msg['reason']", (where, ast.unparse(arg))
            continue
        if not wire_audit.reason_is_summarised(fn, arg):
            bad.append(f"{where[0]}:{line} in {fn.name}: abort({ast.unparse(arg)})")
    assert not bad, "error text may cross the wire:\n" + "\n".join(bad)


def test_the_audit_catches_exception_text():
    fn = ast.parse("def f(transport, e):\n    transport.abort(f'{type(e).__name__}: {e}')\n").body[0]
    arg = fn.body[0].value.args[0]
    assert not wire_audit.reason_is_summarised(fn, arg)
    fn = ast.parse("def f(transport, e):\n    why = str(e)\n    transport.abort(why)\n").body[0]
    assert not wire_audit.reason_is_summarised(fn, fn.body[1].value.args[0])
    fn = ast.parse("def f(transport, e):\n    s = failure_summary(e)\n    transport.abort(s)\n").body[0]
    assert wire_audit.reason_is_summarised(fn, fn.body[1].value.args[0])
