"""A receiving party in its own process, for memory probes: ``python receiver.py LIMITS_JSON``.

It opens job ``j`` with parties ``a`` (the attacker) and ``b`` (itself) on a plain (no TLS)
loopback endpoint, prints its port, then answers commands on stdin, one per line:
``peak`` (peak RSS in bytes so far, from getrusage), ``rss`` (current RSS, psutil), ``stats``
(the job's mailbox stats), ``decode N`` (decode N bytes read from stdin's next line as hex).
"""

import json
import resource
import sys

import psutil

from atoll.federation.grpc_transport import GrpcEndpoint
from atoll.federation.launch import free_port


def main() -> None:
    limits = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    port = free_port()
    ep = GrpcEndpoint("b", {"a": "127.0.0.1:1", "b": f"127.0.0.1:{port}"}, None,
                      connect_timeout=2, **({"mailbox_limits": limits} if limits else {}))
    ep.open_job("j", ["a", "b"])
    print(port, flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "peak":
            print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, flush=True)
        elif cmd == "rss":
            print(psutil.Process().memory_info().rss, flush=True)
        elif cmd == "stats":
            print(json.dumps(ep.stats().get("j", {})), flush=True)
        elif cmd == "quit":
            break
    ep.close(grace=0)


if __name__ == "__main__":
    main()
