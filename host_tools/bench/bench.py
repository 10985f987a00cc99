"""The local bench that stands in for AWS IoT Core: start, stop, inspect, register things.

bench = Bench(Path(".thingkit/bench"))
bench.up()
bench.register("kit-0001")
...
bench.down()

Two processes: the broker (mosquitto) and the services process (shadow, jobs and
streams services, rules engine and the SNTP server). Their ports and settings are saved
in ``bench.json`` the first time the bench starts and reused by every later start, so
the kits, whose config holds the broker and NTP ports, reconnect after a restart.
``up`` starts only the parts that are not running (after ``down``, a crash or a reboot)
and says which.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from host_tools.bench import acl, broker, pki, procs
from host_tools.bench.layout import BenchLayout
from host_tools.bench.ntp_server import read_control, write_control
from host_tools.errors import UserError
from provisioning.ca import CertificateAuthority

DEFAULT_PREFIX = "thingkit"
# What each process is, for messages.
PARTS = {"broker": "broker", "services": "services (shadow, jobs, streams, rules, NTP)"}


def not_running(bench: Bench) -> UserError:
    """The one-line error of a command that needs a running bench."""
    from host_tools.paths import state_home

    root = bench.layout.root
    opt = "" if root == (state_home() / "bench").resolve() else f" --bench-root {root}"
    return UserError("the bench is not running", f"start it with: thingkit bench up{opt}")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


@dataclass
class UpReport:
    """What one ``Bench.start`` did.

    Attributes:
        state: the bench state after the start.
        started: the parts (re)started by this call, with why ("not running" after
            ``down`` or on a first start, "it had stopped (...)" after a crash).
        kept: the parts that were running and were left alone.
        moved: (old, new) broker port if ``--port`` moved the bench.
        seconds: how long the start took.
    """

    state: dict
    started: dict[str, str] = field(default_factory=dict)
    kept: list[str] = field(default_factory=list)
    moved: tuple[int, int] | None = None
    seconds: float = 0.0

    def line(self, root: Path) -> str:
        st = self.state
        where = (
            f"mqtts://localhost:{st['broker_port']} (TLS 1.2, client certificates), "
            f"ntp 127.0.0.1:{st['ntp_port']}, state {root}"
        )
        if not self.started:
            return f"bench already up, nothing restarted: {where}"
        head = f"bench up in {self.seconds:.1f} s"
        if self.kept or any(why != "not running" for why in self.started.values()):
            done = "; ".join(f"restarted {PARTS[p]}: {why}" for p, why in self.started.items())
            if self.kept:
                done += f"; {', '.join(PARTS[p] for p in self.kept)} kept running"
            head += f" ({done})"
        if self.moved:
            head += f" (broker moved from port {self.moved[0]}: kits made for it need re-creating)"
        return f"{head}: {where}"


class Bench:
    """One bench: mosquitto + the services process, all state under ``root``."""

    def __init__(self, root: Path, topic_prefix: str | None = None) -> None:
        self.layout = BenchLayout(Path(root).resolve())
        self._prefix = topic_prefix
        self.rolled_back: list[str] = []  # parts an interrupted start stopped again

    # -- state ---------------------------------------------------------------
    @property
    def state(self) -> dict:
        return self.layout.read_state()

    @property
    def topic_prefix(self) -> str:
        """The given prefix, else the one the bench was first started with."""
        return self._prefix or self.state.get("topic_prefix") or DEFAULT_PREFIX

    @property
    def port(self) -> int:
        return int(self._need("broker_port"))

    @property
    def ntp_port(self) -> int:
        return int(self._need("ntp_port"))

    def _need(self, key: str) -> object:
        st = self.state
        if key not in st:
            raise UserError(
                "the bench has never been started", f"no {key} in {self.layout.state_file}",
                "thingkit bench up",
            )  # fmt: skip
        return st[key]

    def things(self) -> dict[str, dict]:
        try:
            return json.loads(self.layout.registry.read_text())["things"]
        except (FileNotFoundError, ValueError, KeyError):
            return {}

    def claims(self) -> dict[str, dict]:
        """Claim batches (provisioning.claim.ClaimRegistry's file), by batch name."""
        try:
            return json.loads(self.layout.claims.read_text())["batches"]
        except (FileNotFoundError, ValueError, KeyError):
            return {}

    def fleet_ca(self) -> CertificateAuthority:
        return CertificateAuthority.open_or_create(self.layout.fleet_ca, "thingkit bench fleet")

    def _mark(self, part: str) -> str:
        """What the command line of this bench's ``part`` process holds."""
        if part == "broker":
            return str(self.layout.mosquitto_conf)
        return f"--root {self.layout.root} "  # followed by --port: not a prefix of another

    def health(self) -> dict[str, str]:
        """Each process -> "" if it runs, else why not ("not running", "had stopped")."""
        st = self.state
        out = {}
        for part in PARTS:
            pid = st.get(f"{part}_pid")
            if procs.running(pid, self._mark(part)):
                out[part] = ""
            elif not pid:
                out[part] = "not running"
            elif procs.alive(pid):
                out[part] = f"it had stopped (pid {pid} now runs another program)"
            else:
                out[part] = f"it had stopped (pid {pid} gone)"
        return out

    def is_up(self) -> bool:
        return not any(self.health().values())

    def require_up(self) -> None:
        """Raise the one-line "not running" error unless every part of the bench runs."""
        if not self.is_up():
            raise not_running(self)

    # -- lifecycle -------------------------------------------------------------
    def up(
        self, port: int | None = None, ntp_port: int | None = None, timeout: float = 60.0
    ) -> dict:
        """Start whatever part of the bench is not running; return its state."""
        return self.start(port, ntp_port, timeout).state

    def start(
        self, port: int | None = None, ntp_port: int | None = None, timeout: float = 60.0
    ) -> UpReport:
        """Start the parts of the bench that are not running, on its saved ports.

        The first start picks free ports and saves them; later starts reuse them (or
        ``port``/``ntp_port`` if given, which are then saved). A part that runs is left
        alone. If interrupted or failing, the parts this call started are stopped again
        (listed in ``rolled_back``) and the others left as they were. ``timeout`` bounds
        the wait for each part to say it is ready; the wait ends as soon as it is (60 s:
        on a loaded machine the services process once took over 15 s to import).

        Raises:
            UserError: a saved port is taken by another process, a process did not
                start, or ``port`` differs from the port of the running broker.
        """
        t0 = time.monotonic()
        lay = self.layout
        st = self.state
        health = self.health()
        for key, want, part in (
            ("broker_port", port, "broker"),
            ("ntp_port", ntp_port, "services"),
        ):
            if want and not health[part] and st.get(key) != want:
                raise UserError(
                    f"the bench's {part} runs on port {st.get(key)}",
                    f"stop it first to move it to {want}",
                    "thingkit bench down",
                )
        if not any(health.values()):
            return UpReport(st, kept=list(PARTS))
        lay.root.mkdir(parents=True, exist_ok=True)
        lay.logs.mkdir(parents=True, exist_ok=True)
        pki.ensure(lay)
        old_port = st.get("broker_port")
        port = port or old_port or procs.free_port()
        ntp_port = ntp_port or st.get("ntp_port") or procs.free_port(socket.SOCK_DGRAM)
        moved = (old_port, port) if old_port and old_port != port else None
        st.update(broker_port=port, ntp_port=ntp_port, topic_prefix=self.topic_prefix)
        st.setdefault("first_started", time.time())
        st["started"] = time.time()
        if moved or st.get("services_ntp_port", ntp_port) != ntp_port:
            health["services"] = health["services"] or "a port changed"
        lay.write_state(st)
        if not lay.ntp_control.exists():
            write_control(lay.ntp_control)
        started: dict[str, str] = {}
        self.rolled_back = []
        try:
            if health["broker"]:
                started["broker"] = health["broker"]
                self._start_broker(timeout, wait_services=not health["services"])
            if health["services"]:
                started["services"] = health["services"]
                self._stop("services")  # still running if only a port changed
                self._start_services(timeout)
        except BaseException:
            for part in reversed(started):
                if self._stop(part):
                    self.rolled_back.append(part)
            raise
        kept = [p for p in PARTS if p not in started]
        return UpReport(self.state, started, kept, moved, time.monotonic() - t0)

    def _check_port(self, port: int, kind: int, what: str) -> None:
        if procs.port_free(port, kind):
            return
        holder = procs.port_holder(port, kind) or "another process"
        raise UserError(
            f"the bench's {what} port {port} (saved in {self.layout.state_file}) is taken by "
            f"{holder}",
            "the kits are made for this port",
            "stop that process, or move the bench with `thingkit bench up --port N` "
            "and re-create its kits (`thingkit kit create NAME --force`)",
        )

    def _stop(self, part: str) -> bool:
        """Stop ``part`` if it runs (never a process that took over a stale pid); return
        whether it was running."""
        st = self.state
        pid = st.pop(f"{part}_pid", None)
        ours = procs.running(pid, self._mark(part))
        if ours:
            procs.stop(pid)
        self.layout.write_state(st)
        return ours

    def _start_broker(self, timeout: float, wait_services: bool = False) -> None:
        """Start mosquitto on the saved port; with ``wait_services``, also wait until
        the running services process has reconnected to it."""
        lay = self.layout
        st = self.state
        self._check_port(st["broker_port"], socket.SOCK_STREAM, "broker")
        self._write_acl()
        conf = broker.render_conf(lay, st["broker_port"])
        lay.mosquitto_conf.write_text(conf)
        ready = lay.root / "services.ready"
        ready.unlink(missing_ok=True)
        log_mark = self._log_size()
        env = dict(os.environ, **broker.write_openssl_cnf(lay))
        pid = procs.spawn(
            [broker.mosquitto_binary(), "-c", str(lay.mosquitto_conf)],
            lay.logs / "mosquitto.out",
            env=env,
        )
        st["broker_pid"] = pid
        st["broker_loaded"] = self._enforced_digest(conf.encode())
        st["broker_acl"] = _digest(_read(lay.acl))
        lay.write_state(st)
        if not self._wait_broker_running(log_mark, timeout):
            raise UserError("mosquitto did not start", where=str(lay.broker_log))
        if wait_services:
            self._wait_ready(timeout, None, "bench services did not reconnect")

    def _start_services(self, timeout: float) -> None:
        lay = self.layout
        st = self.state
        self._check_port(st["ntp_port"], socket.SOCK_DGRAM, "NTP")
        ready = lay.root / "services.ready"
        ready.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "host_tools.bench.services", "--root", str(lay.root)]
        argv += ["--port", str(st["broker_port"]), "--ntp-port", str(st["ntp_port"])]
        argv += ["--topic-prefix", self.topic_prefix]
        pid = procs.spawn(argv, lay.services_log, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        st["services_pid"] = pid
        st["services_ntp_port"] = st["ntp_port"]
        lay.write_state(st)
        self._wait_ready(timeout, pid, "bench services did not start")

    def _wait_ready(self, timeout: float, pid: int | None, what: str) -> None:
        ready = self.layout.root / "services.ready"
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if time.monotonic() > deadline or (pid is not None and not procs.alive(pid)):
                raise UserError(what, where=str(self.layout.services_log))
            time.sleep(0.05)

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
        return self._wait_log(log_mark, b" running", timeout, self.state.get("broker_pid"))

    def _wait_log(self, mark: int, text: bytes, timeout: float, pid: int | None) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not procs.alive(pid):
                return False
            try:
                with open(self.layout.broker_log, "rb") as f:
                    f.seek(mark)
                    if text in f.read():
                        return True
            except FileNotFoundError:
                pass
            time.sleep(0.02)
        return False

    def down(self) -> None:
        """Stop every bench process (quiet if none is running). Ports, settings, things,
        shadows and jobs stay for the next ``up``."""
        if not self.layout.state_file.exists():
            return
        for part in ("services", "broker"):
            self._stop(part)

    def status(self) -> dict:
        st = self.state
        health = self.health()
        return {
            "root": str(self.layout.root),
            "up": not any(health.values()),
            "broker": {
                "pid": st.get("broker_pid"),
                "port": st.get("broker_port"),
                "alive": not health["broker"],
            },
            "services": {"pid": st.get("services_pid"), "alive": not health["services"]},
            "ntp_port": st.get("ntp_port"),
            "things": sorted(self.things()),
        }

    def restart_broker(self, timeout: float = 60.0) -> None:
        """Stop and start mosquitto on the same port; return once the services are back."""
        self._stop("broker")
        self._start_broker(timeout, wait_services=not self.health()["services"])

    def stop_broker(self) -> None:
        """Stop mosquitto only (to test devices against a broker that is down)."""
        pid = self.state.get("broker_pid")
        if procs.running(pid, self._mark("broker")):
            procs.stop(pid)

    # -- what the broker enforces ---------------------------------------------------
    def _crl_digest(self) -> str:
        """The revoked serials per issuer in the CRL file (not its signing times)."""
        from cryptography import x509

        data = _read(self.layout.pki / "fleet.crl.pem")
        marker = b"-----BEGIN X509 CRL-----"
        sig = []
        for chunk in data.split(marker)[1:]:
            crl = x509.load_pem_x509_crl(marker + chunk)
            serials = sorted(r.serial_number for r in crl)
            sig.append(f"{crl.issuer.rfc4514_string()}:{serials}")
        return _digest("\n".join(sorted(sig)).encode()) if sig else ""

    def _enforced_digest(self, conf: bytes) -> str:
        """Digest of what mosquitto reads only when it starts: its config, the client
        CAs and the CRL (a listener's TLS settings are not re-read on SIGHUP)."""
        return _digest(conf + _read(self.layout.client_cafile) + self._crl_digest().encode())

    def apply_config(self) -> str:
        """Make the running broker enforce the current ACL, CAs, CRL and config, with
        as little disturbance as that needs.

        Returns:
            "unchanged" (nothing to do: no client notices), "reloaded" (ACL changed:
            SIGHUP, mosquitto re-reads ``acl_file``, connections stay), "restarted"
            (config, client CAs or revocations changed: mosquitto reads those only at
            start; devices reconnect) or "down" (the broker is not running; the files
            are written and apply when it starts).
        """
        lay = self.layout
        self._write_acl()
        if self.health()["broker"]:
            return "down"
        st = self.state
        conf = broker.render_conf(lay, st["broker_port"])
        if _read(lay.mosquitto_conf) != conf.encode():
            lay.mosquitto_conf.write_text(conf)
        if st.get("broker_loaded") != self._enforced_digest(conf.encode()):
            self.restart_broker()
            return "restarted"
        acl_now = _digest(_read(lay.acl))
        if st.get("broker_acl") == acl_now:
            return "unchanged"
        # mosquitto logs "Reloading config." when it starts re-reading the files and
        # clears its reload flag when done: a SIGHUP that lands while it is still reading
        # (a second reload right after a first) is lost. Send it again until one shows.
        for _ in range(5):
            mark = self._log_size()
            os.kill(st["broker_pid"], signal.SIGHUP)
            if self._wait_log(mark, b"Reloading config", 1.0, st["broker_pid"]):
                break
        else:
            raise UserError("mosquitto did not reload its ACL", where=str(lay.broker_log))
        st["broker_acl"] = acl_now
        lay.write_state(st)
        return "reloaded"

    # -- fleet -----------------------------------------------------------------
    def register(self, thing: str, fingerprint: str = "") -> str:
        """Attach the thing policy to ``thing`` (ACL); reload the broker if that changed
        anything. Returns what the broker did (see :meth:`apply_config`)."""
        things = self.things()
        if things.get(thing, {}).get("fingerprint") != fingerprint:
            things[thing] = {"fingerprint": fingerprint, "registered": int(time.time())}
            tmp = self.layout.registry.with_suffix(".tmp")
            self.layout.root.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"things": things}, indent=1))
            os.replace(tmp, self.layout.registry)
        return self.apply_config()

    def _write_acl(self) -> None:
        text = acl.render(self.things(), self.topic_prefix, self.claims())
        self.layout.root.mkdir(parents=True, exist_ok=True)
        if _read(self.layout.acl) != text.encode():
            tmp = self.layout.acl.with_suffix(".tmp")
            tmp.write_text(text)
            os.replace(tmp, self.layout.acl)

    # -- time ------------------------------------------------------------------
    def set_ntp(self, offset_s: float = 0.0, blocked: bool = False) -> None:
        """Skew or block the bench's NTP server (takes effect on its next request; kept
        across restarts)."""
        if self.health()["services"]:
            raise not_running(self)
        write_control(self.layout.ntp_control, offset_s, blocked)

    def ntp_settings(self) -> dict:
        """The NTP server's saved skew and block (``{"offset_s": 0.0, "blocked": False}``)."""
        return {"offset_s": 0.0, "blocked": False, **read_control(self.layout.ntp_control)}

    def broker_log(self) -> str:
        try:
            return self.layout.broker_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""
