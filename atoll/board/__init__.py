"""The board: each node's web dashboard, served by the node itself at ``/board/``.

Jobs (list with filters; a job's DAG across parties, live over server-sent events; steps,
parameters, metrics, the report's plots; this node's log, live), approvals (accept or
reject a proposal), the data registry and grants (register, grant, revoke), the audit
trail with the chain's verification, partners with certificate warnings.

It is a client of the node's REST API (``/api/v1``) with the node's own tokens and roles:
a page is a static shell holding no data; every figure comes from an authenticated
request, and every change goes through the same routes the CLI uses, so a viewer who
cannot approve with ``curl`` cannot approve on the board either. All text from partners
and job files is put into the page as text (DOM ``textContent``), never as HTML, and the
Content Security Policy forbids inline scripts.

``views`` holds the pure functions (the DAG view, job rows, filters); ``routes`` mounts the
page and the board's API routes on the node's app; ``static/`` holds the page, its script
and its style sheet (plain JavaScript, no build step, no external resource).
"""

from atoll.board.routes import mount

__all__ = ["mount"]
