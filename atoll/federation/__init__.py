"""Federation runtime: how parties talk. See :class:`Context`, :class:`Endpoint` and :func:`launch`."""

from atoll.federation.context import Context
from atoll.federation.inprocess import InProcessEndpoint, InProcessHub, InProcessJobTransport, InProcessTransport
from atoll.federation.launch import Party, PartyFailed, launch
from atoll.federation.transport import Endpoint, Mailbox, Transport, failure_summary

__all__ = ["Context", "Endpoint", "InProcessEndpoint", "InProcessHub", "InProcessJobTransport",
           "InProcessTransport", "Mailbox", "Party", "PartyFailed", "Transport", "failure_summary", "launch"]
