"""The pipeline as a DAG: cycle detection and the order of execution (waves)."""

from __future__ import annotations

from typing import Mapping, Sequence


def find_cycle(deps: Mapping[str, Sequence[str]]) -> list[str] | None:
    """One cycle of ``deps`` ({node: [nodes it depends on]}) as a list of nodes, or None."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = finished
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for d in deps.get(n, ()):
            if d not in deps:
                continue
            if state.get(d) == 1:
                return list(reversed(stack[stack.index(d):]))
            if d not in state:
                found = visit(d)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in deps:
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def waves(deps: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Nodes grouped so each group depends only on earlier groups (file order kept inside).

    Nodes of one wave are independent branches and may run at the same time.
    """
    done: set[str] = set()
    left = list(deps)
    out: list[list[str]] = []
    while left:
        ready = [n for n in left if all(d in done or d not in deps for d in deps[n])]
        if not ready:
            raise ValueError(f"cycle among {left}")
        out.append(ready)
        done |= set(ready)
        left = [n for n in left if n not in done]
    return out


def ancestors(deps: Mapping[str, Sequence[str]], node: str) -> set[str]:
    """Every node ``node`` depends on, directly or not."""
    seen: set[str] = set()
    todo = list(deps.get(node, ()))
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo += list(deps.get(n, ()))
    return seen
