"""The node: one organisation's long-running Atoll service (``atoll node init|start``).

=================  ==========================================================================
``config``         identity (Ed25519 signing key, TLS certificate from the federation CA,
                   card for partners, one-time bootstrap token) and ``node.yaml``
``store``          the SQL store (SQLAlchemy 2 + Alembic; SQLite or PostgreSQL), incl. the
                   run store :class:`~atoll.node.store.SqlRunStore`
``data``           data registry and signed grants (checked at proposal and every task start)
``policy``         what a node checks before it takes part in a job
``audit``          the hash-chained, append-only audit log and its verification
``control``        signed node-to-node messages on the federation endpoint (replay-protected)
``executor``       worker processes running this party's tasks through the node's endpoint
``service``        :class:`~atoll.node.service.Node`: proposals, approvals, the task flow
``api``            the REST API (FastAPI); ``client``: its client; ``cli``: the commands
=================  ==========================================================================
"""
