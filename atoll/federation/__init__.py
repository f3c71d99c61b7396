"""Federation runtime: how parties talk. See :class:`Context` and :func:`launch`."""

from atoll.federation.context import Context
from atoll.federation.inprocess import InProcessHub, InProcessTransport
from atoll.federation.launch import Party, PartyFailed, launch
from atoll.federation.transport import Mailbox, Transport

__all__ = ["Context", "InProcessHub", "InProcessTransport", "Mailbox", "Party", "PartyFailed",
           "Transport", "launch"]
