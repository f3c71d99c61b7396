"""Helpers of the wire audits (tests of what crosses the wire)."""

import numpy as np


def arrays(obj):
    """Every numpy array inside a decoded wire value (dicts, lists and tuples walked)."""
    if isinstance(obj, np.ndarray):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from arrays(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from arrays(v)


# ------------------------------------------------------------------ error paths that cross the wire
#: calls whose argument a peer is shown: a party's failure reason (transport/endpoint abort,
#: the relay of a node's worker) -- context.abort (a gRPC status back to the caller about its own
#: request) is not one of them
_WIRE_ERROR_CALLS = ("abort", "abort_job")


def _enclosing_functions(tree):
    import ast

    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def error_paths(package_root):
    """Every place in the package where a failure reason is handed to something that tells the
    peers: ``(file, line, function, argument source)`` for each ``X.abort(arg)`` /
    ``X.abort_job(job, arg)`` call whose receiver is not a gRPC ``context``."""
    import ast
    from pathlib import Path

    out = []
    for path in sorted(Path(package_root).rglob("*.py")):
        src = path.read_text()
        tree = ast.parse(src)
        for fn in _enclosing_functions(tree):
            for node in ast.walk(fn):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr in _WIRE_ERROR_CALLS and node.args):
                    continue
                receiver = ast.unparse(node.func.value)
                if receiver == "context" or receiver.endswith(".context"):
                    continue
                arg = node.args[-1]
                out.append((path, node.lineno, fn, arg))
    return out


def reason_is_summarised(fn, arg) -> bool:
    """Whether ``arg`` (an argument of a call inside function ``fn``) can only be a failure
    summary: ``failure_summary(...)``, ``clean_reason(...)`` of one, a parameter of ``fn`` (the
    reason is its caller's to summarise), or a name ``fn`` assigns only from ``failure_summary``."""
    import ast

    def summary_call(node) -> bool:
        return (isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute))
                and (node.func.id if isinstance(node.func, ast.Name) else node.func.attr)
                in ("failure_summary", "clean_reason")
                and all(not isinstance(a, ast.JoinedStr) for a in node.args))

    if summary_call(arg):
        return True
    if isinstance(arg, ast.Name):
        params = {a.arg for a in (*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs)}
        assigned = [n.value for n in ast.walk(fn) if isinstance(n, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == arg.id for t in n.targets)]
        if assigned:
            return all(summary_call(v) for v in assigned)
        return arg.id in params
    return False
