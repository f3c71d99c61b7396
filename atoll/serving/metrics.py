"""Request counters and latency histograms, in Prometheus' text exposition format (no extra dependency)."""

from __future__ import annotations

import bisect
import threading

#: histogram bucket upper bounds, seconds
BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class Metrics:
    """Requests by outcome and a latency histogram of one serving process."""

    def __init__(self, who: str):
        self.who = who
        self._lock = threading.Lock()
        self.outcomes: dict[str, int] = {}
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0

    def observe(self, outcome: str, seconds: float) -> None:
        with self._lock:
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
            self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
            self.total += seconds

    def prometheus(self) -> str:
        """The metrics as a Prometheus scrape answer."""
        with self._lock:
            outcomes, counts, total = dict(self.outcomes), list(self.counts), self.total
        lines = ["# HELP atoll_serving_requests_total Scoring requests by outcome.",
                 "# TYPE atoll_serving_requests_total counter"]
        lines += [f'atoll_serving_requests_total{{outcome="{k}"}} {v}' for k, v in sorted(outcomes.items())]
        lines += ["# HELP atoll_serving_latency_seconds Time to answer a scoring request.",
                  "# TYPE atoll_serving_latency_seconds histogram"]
        acc = 0
        for le, c in zip(BUCKETS, counts):
            acc += c
            lines.append(f'atoll_serving_latency_seconds_bucket{{le="{le:g}"}} {acc}')
        acc += counts[-1]
        lines += [f'atoll_serving_latency_seconds_bucket{{le="+Inf"}} {acc}',
                  f"atoll_serving_latency_seconds_sum {total:.6f}", f"atoll_serving_latency_seconds_count {acc}"]
        return "\n".join(lines) + "\n"


def serve_metrics(metrics: Metrics, listen: str):
    """A Prometheus scrape endpoint (``GET /metrics``) for a process without an HTTP API (a host)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            if self.path != "/metrics":
                self.send_error(404)
                return
            body = metrics.prometheus().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    host, _, port = listen.rpartition(":")
    server = ThreadingHTTPServer((host, int(port)), Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="atoll-metrics").start()
    return server
