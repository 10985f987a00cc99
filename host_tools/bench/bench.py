"""The local bench that stands in for AWS IoT Core: start, stop, inspect, register things.

bench = Bench(Path(".thingkit/bench"))
bench.up()
bench.register("kit-0001")
...
bench.down()
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from host_tools.bench import acl, broker, pki, procs
from host_tools.bench.layout import BenchLayout
from host_tools.bench.ntp_server import write_control
from host_tools.errors import UserError
from provisioning.ca import CertificateAuthority


class Bench:
    """One bench: mosquitto + the services process, all state under ``root``."""

    def __init__(self, root: Path, topic_prefix: str = "thingkit") -> None:
        self.layout = BenchLayout(Path(root).resolve())
        self.topic_prefix = topic_prefix

    # -- state ---------------------------------------------------------------
    @property
    def state(self) -> dict:
        return self.layout.read_state()

    @property
    def port(self) -> int:
        return int(self._need("broker_port"))

    @property
    def ntp_port(self) -> int:
        return int(self._need("ntp_port"))

    def _need(self, key: str) -> object:
        st = self.state
        if key not in st:
            raise UserError("the bench is not up", where="thingkit bench up")
        return st[key]

    def things(self) -> dict[str, dict]:
        try:
            return json.loads(self.layout.registry.read_text())["things"]
        except (FileNotFoundError, ValueError, KeyError):
            return {}

    def fleet_ca(self) -> CertificateAuthority:
        return CertificateAuthority.open_or_create(self.layout.fleet_ca, "thingkit bench fleet")

    def is_up(self) -> bool:
        st = self.state
        return procs.alive(st.get("broker_pid")) and procs.alive(st.get("services_pid"))

    # -- lifecycle -------------------------------------------------------------
    def up(
        self, port: int | None = None, ntp_port: int | None = None, timeout: float = 15.0
    ) -> dict:
        """Start the bench (no-op if it is already up). Returns its state."""
        if self.is_up():
            return self.state
        self.down()
        lay = self.layout
        lay.root.mkdir(parents=True, exist_ok=True)
        lay.logs.mkdir(parents=True, exist_ok=True)
        pki.ensure(lay)
        port = port or procs.free_port()
        ntp_port = ntp_port or procs.free_port(kind=2)  # SOCK_DGRAM
        self._write_acl()
        lay.mosquitto_conf.write_text(broker.render_conf(lay, port))
        write_control(lay.ntp_control)
        ready = lay.root / "services.ready"
        ready.unlink(missing_ok=True)

        log_mark = self._log_size()
        broker_pid = self._spawn_broker()
        state = {
            "broker_pid": broker_pid,
            "broker_port": port,
            "ntp_port": ntp_port,
            "topic_prefix": self.topic_prefix,
            "started": time.time(),
        }
        lay.write_state(state)
        if not self._wait_broker_running(log_mark, timeout):
            self.down()
            raise UserError("mosquitto did not start", where=str(lay.broker_log))
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        services_pid = procs.spawn(
            [
                sys.executable,
                "-m",
                "host_tools.bench.services",
                "--root",
                str(lay.root),
                "--port",
                str(port),
                "--ntp-port",
                str(ntp_port),
                "--topic-prefix",
                self.topic_prefix,
            ],
            lay.services_log,
            env=env,
        )
        state["services_pid"] = services_pid
        lay.write_state(state)
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if time.monotonic() > deadline or not procs.alive(services_pid):
                self.down()
                raise UserError("bench services did not start", where=str(lay.services_log))
            time.sleep(0.05)
        return state

    def _log_size(self) -> int:
        try:
            return self.layout.broker_log.stat().st_size
        except FileNotFoundError:
            return 0

    def _wait_broker_running(self, log_mark: int, timeout: float) -> bool:
        """Wait for mosquitto to log that it runs (its listeners are open by then).

        Reading the log rather than probing the port keeps the log free of half-open
        test connections, which the validator would count as failed TLS attempts.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not procs.alive(self.state.get("broker_pid")):
                return False
            try:
                with open(self.layout.broker_log, "rb") as f:
                    f.seek(log_mark)
                    if b" running" in f.read():
                        return True
            except FileNotFoundError:
                pass
            time.sleep(0.02)
        return False

    def _spawn_broker(self) -> int:
        env = dict(os.environ, **broker.write_openssl_cnf(self.layout))
        return procs.spawn(
            [broker.mosquitto_binary(), "-c", str(self.layout.mosquitto_conf)],
            self.layout.logs / "mosquitto.out",
            env=env,
        )

    def down(self) -> None:
        """Stop every bench process (quiet if none is running). State files stay."""
        st = self.state
        procs.stop(st.get("services_pid"))
        procs.stop(st.get("broker_pid"))
        for k in ("broker_pid", "services_pid"):
            st.pop(k, None)
        if st:
            self.layout.write_state(st)

    def status(self) -> dict:
        st = self.state
        return {
            "root": str(self.layout.root),
            "up": self.is_up(),
            "broker": {
                "pid": st.get("broker_pid"),
                "port": st.get("broker_port"),
                "alive": procs.alive(st.get("broker_pid")),
            },
            "services": {
                "pid": st.get("services_pid"),
                "alive": procs.alive(st.get("services_pid")),
            },
            "ntp_port": st.get("ntp_port"),
            "things": sorted(self.things()),
        }

    def restart_broker(self, timeout: float = 15.0) -> None:
        """Stop and start mosquitto on the same port; return once the services are back."""
        st = self.state
        ready = self.layout.root / "services.ready"
        ready.unlink(missing_ok=True)
        procs.stop(st.get("broker_pid"))
        log_mark = self._log_size()
        pid = self._spawn_broker()
        st["broker_pid"] = pid
        self.layout.write_state(st)
        if not self._wait_broker_running(log_mark, timeout):
            raise UserError("mosquitto did not restart", where=str(self.layout.broker_log))
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if time.monotonic() > deadline:
                raise UserError(
                    "bench services did not reconnect", where=str(self.layout.services_log)
                )
            time.sleep(0.05)

    def stop_broker(self) -> None:
        """Stop mosquitto only (to test devices against a broker that is down)."""
        procs.stop(self.state.get("broker_pid"))

    # -- fleet -----------------------------------------------------------------
    def register(self, thing: str, fingerprint: str = "") -> None:
        """Attach the thing policy to ``thing`` (ACL) and reload the broker."""
        things = self.things()
        things[thing] = {"fingerprint": fingerprint, "registered": int(time.time())}
        tmp = self.layout.registry.with_suffix(".tmp")
        self.layout.root.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"things": things}, indent=1))
        os.replace(tmp, self.layout.registry)
        self._write_acl()
        self._reload()

    def _write_acl(self) -> None:
        self.layout.acl.write_text(acl.render(self.things(), self.topic_prefix))

    def _reload(self) -> None:
        pid = self.state.get("broker_pid")
        if procs.alive(pid):
            os.kill(pid, signal.SIGHUP)
            time.sleep(0.2)  # mosquitto re-reads the ACL between network loops

    # -- time ------------------------------------------------------------------
    def set_ntp(self, offset_s: float = 0.0, blocked: bool = False) -> None:
        """Skew or block the bench's NTP server (takes effect on its next request)."""
        if not self.layout.root.is_dir():
            raise UserError(
                "the bench is not up", f"no bench in {self.layout.root}", "thingkit bench up"
            )
        write_control(self.layout.ntp_control, offset_s, blocked)

    def broker_log(self) -> str:
        try:
            return self.layout.broker_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""
