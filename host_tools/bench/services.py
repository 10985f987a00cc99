"""The bench's service process: Device Shadow, Jobs, streams and fleet provisioning
services, rules engine, SNTP.

Started by ``thingkit bench up``; runs until SIGTERM, or exits (status 1) if its NTP
thread ends, so that ``bench up`` sees it dead and restarts it::

    python -m host_tools.bench.services --root DIR --port 8883 --ntp-port 12300
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

from host_tools.bench import (
    cert_rotation,
    clients,
    fleet_provisioning,
    jobs_service,
    lifecycle,
    rules,
    shadow_service,
    streams_service,
)
from host_tools.bench.layout import SERVICES_CN, BenchLayout
from host_tools.bench.ntp_server import SNTPServer
from host_tools.bench.shadow_engine import ShadowEngine

log = logging.getLogger("bench.services")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ntp-port", type=int, required=True)
    ap.add_argument("--topic-prefix", default="thingkit")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s.%(msecs)03d %(name)s %(levelname)s %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
    )
    layout = BenchLayout(args.root)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    # This process may restart the broker (fleet provisioning revoking certificates):
    # the kernel reaps such children, so one stopped by another process (`bench down`,
    # a CLI restart) never lingers as a zombie that looks alive to them.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)

    ntp = SNTPServer(args.ntp_port, layout.ntp_control, layout.ntp_log)
    ntp.start()
    engine = ShadowEngine(layout.shadows)
    client = clients.make_client(layout, SERVICES_CN, persistent=True)
    shadow_service.attach(client, engine, log)
    jobs_service.attach(client, jobs_service.make_engine(layout), log, stop)
    streams_service.attach(client, streams_service.StreamsEngine(layout.streams), log)
    fleet_provisioning.attach(client, fleet_provisioning.make_engine(layout), log)
    cert_rotation.attach(client, layout, args.topic_prefix, log)
    client.reconnect_delay_set(min_delay=1, max_delay=1)
    prev = client.on_connect
    last_sub: dict = {"mid": None}
    acked: set[int] = set()
    lock = threading.Lock()

    def ready() -> None:
        log.info("services ready (broker %d, ntp %d)", args.port, ntp.port)
        (layout.root / "services.ready").write_text("ready\n")

    def on_connect(c, userdata, flags, rc, props):
        if prev is not None:
            prev(c, userdata, flags, rc, props)
        # Subscribed last: its SUBACK means every subscription before it is in place.
        # The first on_connect runs in the main thread (clients.connect) while paho's
        # thread reads SUBACKs: the SUBACK may come before its mid is known here (seen:
        # a bench whose services never said ready under load).
        mid = rules.attach(c, engine, args.topic_prefix)
        with lock:
            last_sub["mid"] = mid
            done = mid in acked
        if done:
            ready()

    def on_subscribe(c, userdata, mid, reason_codes, props):
        with lock:
            acked.add(mid)
            done = mid == last_sub["mid"]
        if done:
            ready()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    clients.connect(client, args.port)
    # AWS IoT lifecycle events ($aws/events/presence/...), from the broker's log.
    lifecycle.follow(
        layout.broker_log, lambda t, p: client.publish(t, p, qos=1), layout.registry, stop
    )
    rc = 0
    while not stop.wait(1.0):
        # NTP is a thread of this process: if it ends, the process ends too, so that
        # `thingkit bench up` sees a dead services process and starts it again.
        if not ntp.alive():
            log.error("the NTP server stopped: exiting so that `bench up` restarts it")
            rc = 1
            break
    log.info("stopping")
    client.disconnect()
    client.loop_stop()
    ntp.stop()
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
