"""tk.ota's agent on the MicroPython unix port with a fake MQTT client: what it
subscribes to, what it publishes to the Jobs and streams APIs, what it leaves on flash.
(The whole update, with the bench's services, is hil_tests/test_ota.py.)"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

PRELUDE = """
import json, os
from tkfakes import FakeMQTT, out
from tk import ota

class Hal:
    NAME = "sim"
    def running_slot(self):
        return "ota_0"
    def reboot(self):
        raise SystemExit(75)
    def heap_reserved(self):
        return 0

class Cfg:
    ota_pubkey = "certs/ota-signing.der"
    ota_confirm_s = 60

class App1:
    pings = 0

class Topics:
    ping = b"thingkit/kit-1/ping"

c = FakeMQTT()
agent = ota.Agent(Hal(), Cfg(), c, "kit-1", App1(), Topics())
J = b"$aws/things/kit-1/jobs/"

def job(doc, job_id="j1"):
    return {"execution": {"jobId": job_id, "jobDocument": doc, "status": "IN_PROGRESS"}}

def run():
    for _ in range(4):
        c.poll(1)
        agent.service()
"""


def _key(mpy) -> None:
    k = ec.generate_private_key(ec.SECP256R1())
    der = k.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    mpy.write("certs/ota-signing.der", der)


def test_subscriptions_fit_the_session_subscribe(mpy) -> None:
    _key(mpy)
    out = mpy.one(
        """
        subs = agent.subscriptions()
        agent.start()
        out({"subs": [s.decode() for s in subs], "pubs": c.published()})
        """,
        prelude=PRELUDE,
    )
    assert out["subs"] == [
        "$aws/things/kit-1/jobs/notify-next",
        "$aws/things/kit-1/jobs/start-next/+",
    ]
    # 5 classic shadow replies + App #1's ping + these 2 = 8, AWS IoT's limit.
    (topic, body) = out["pubs"][0]
    assert topic == "$aws/things/kit-1/jobs/start-next" and "clientToken" in body


def test_no_key_no_jobs(mpy) -> None:
    out = mpy.one(
        """
        agent.subscriptions()
        agent.start()
        out({"pubs": c.published()})
        """,
        prelude=PRELUDE,
    )
    assert out["pubs"] == []


def test_other_operation_and_old_version_rejected_without_touching_flash(mpy) -> None:
    _key(mpy)
    out = mpy.json(
        """
        agent.subscriptions()
        c.inject(J + b"start-next/accepted", job({"operation": "reboot"}, "j0"))
        run()
        c.inject(J + b"start-next/accepted", job({"operation": "thingkit.ota",
            "version": "0.0.1", "kind": "app", "streamId": "s", "size": 100}, "j1"))
        run()
        out({"pubs": c.published(), "files": sorted(os.listdir())})
        """,
        prelude=PRELUDE,
    )[0]
    ups = [(t, b) for t, b in out["pubs"] if t.endswith("/update")]
    assert ups[0][0] == "$aws/things/kit-1/jobs/j0/update"
    assert (
        ups[0][1]["status"] == "REJECTED"
        and "unknown operation" in ups[0][1]["statusDetails"]["reason"]
    )
    assert ups[1][0] == "$aws/things/kit-1/jobs/j1/update"
    assert ups[1][1]["status"] == "REJECTED"
    assert ups[1][1]["statusDetails"]["reason"].startswith("downgrade")
    assert not any(f.startswith("slot_") for f in out["files"])


@pytest.mark.parametrize(
    "big_free, block, count",
    [
        (None, 4096, 2),  # this port's default heap has room: 4 KiB blocks, 8 KiB a request
        (1 << 40, 1024, 8),  # a heap with less free than BIG_FREE: 1 KiB blocks
    ],
)
def test_job_taken_asks_for_blocks_and_abandons_on_cancel(mpy, big_free, block, count) -> None:
    _key(mpy)
    setup = (
        ""
        if big_free is None
        else (f"\n        import tk.ota_write\n        tk.ota_write.BIG_FREE = {big_free}")
    )
    out = mpy.json(
        setup
        + """
        agent.subscriptions()
        c.inject(J + b"start-next/accepted", job({"operation": "thingkit.ota",
            "version": "9.0.0", "kind": "app", "streamId": "s-1", "fileId": 0,
            "size": 30000}, "j2"))
        run()
        out({"subs": c.sub_packets, "pubs": c.published(),
             "job": json.load(open("ota/job.json"))})
        c.pubs = []
        c.inject(J + b"notify-next", {"execution": {"jobId": "j3"}})
        run()
        out({"pubs": c.published(), "exists": "job.json" in os.listdir("ota")})
        """,
        prelude=PRELUDE,
    )
    first, after = out
    packet = [t.decode() if isinstance(t, bytes) else t for t in first["subs"][-1][0]]
    assert packet == [
        "$aws/things/kit-1/jobs/j2/update/accepted",
        "$aws/things/kit-1/jobs/j2/update/rejected",
        "$aws/things/kit-1/streams/s-1/data/json",
        "$aws/things/kit-1/streams/s-1/rejected/json",
    ]
    pubs = dict(first["pubs"])
    assert pubs["$aws/things/kit-1/jobs/j2/update"]["status"] == "IN_PROGRESS"
    req = pubs["$aws/things/kit-1/streams/s-1/get/json"]
    assert (req["f"], req["l"], req["o"], req["n"]) == (0, block, 0, count)
    assert first["job"]["po"] == 0 and first["job"]["slot"] == "a"
    # Cancelled: the next job is another one; the partial state goes, start-next again.
    assert not after["exists"]
    assert [t for t, _ in after["pubs"]] == ["$aws/things/kit-1/jobs/start-next"]


WORK = ("tk.ota_job", "tk.jobs", "tk.slots", "tk.ota_boot", "tk.ota_write", "tk.ota_bundle")
APP_JOB = (
    'job({"operation": "thingkit.ota", "version": "9.0.0", "kind": "app", '
    '"streamId": "s-1", "fileId": 0, "size": 30000}, "j2")'
)


def test_idle_agent_keeps_only_its_resident_part(mpy) -> None:
    # RAM: while no update runs, only tk.ota stays; a job loads the working part, which
    # is dropped from sys.modules again once the job is over.
    _key(mpy)
    out = mpy.json(
        """
        import sys
        WORK = WORK_
        def loaded():
            return [m for m in WORK if m in sys.modules]
        agent.subscriptions()
        agent.start()
        c.inject(J + b"start-next/accepted", {"clientToken": "x", "timestamp": 1})
        run()
        out({"idle": loaded(), "work": agent.work is not None})
        c.inject(J + b"start-next/accepted", APP_JOB_)
        run()
        out({"busy": loaded(), "work": agent.work is not None})
        c.inject(J + b"notify-next", {"execution": {"jobId": "j3"}})
        run()
        out({"after": loaded(), "work": agent.work is not None})
        """.replace("WORK_", repr(WORK)).replace("APP_JOB_", APP_JOB),
        prelude=PRELUDE,
    )
    idle, busy, after = out
    assert idle == {"idle": [], "work": False}
    assert busy["work"] and {"tk.ota_job", "tk.jobs", "tk.ota_write"} <= set(busy["busy"])
    assert after == {"after": [], "work": False}


def test_out_of_memory_during_an_update_fails_the_job_and_keeps_the_device(mpy) -> None:
    _key(mpy)
    out = mpy.one(
        """
        import sys
        agent.subscriptions()
        c.inject(J + b"start-next/accepted", APP_JOB_)
        run()
        def boom():
            raise MemoryError("memory allocation failed, allocating 6514 bytes")
        agent.work.dl.step = boom
        c.pubs = []
        agent.service()
        out({"pubs": c.published(), "files": os.listdir("ota") if "ota" in os.listdir()
             else [], "work": agent.work is not None,
             "loaded": "tk.ota_write" in sys.modules or "tk.ota_job" in sys.modules})
        """.replace("APP_JOB_", APP_JOB),
        prelude=PRELUDE,
    )
    ups = [b for t, b in out["pubs"] if t == "$aws/things/kit-1/jobs/j2/update"]
    assert len(ups) == 1 and ups[0]["status"] == "FAILED"
    assert ups[0]["statusDetails"]["reason"].startswith("out_of_memory:")
    assert "$aws/things/kit-1/jobs/start-next" in [t for t, _ in out["pubs"]]
    assert "job.json" not in out["files"]
    assert not out["work"] and not out["loaded"]


# -- kind "firmware" against the partition table ---------------------------------------
FW_HAL = """
from sim_board.partitions import Partition
Hal.partition = lambda self: Partition
agent.hal = Hal()
"""


def _table(mpy, board: str) -> dict[str, str]:
    """The kit's partition table (a board definition) and its partition files' folder."""
    from host_tools.kit.app_partition import prepare
    from host_tools.paths import BOARDS

    full = (BOARDS / f"{board}.json").read_text()
    mpy.write("board-full.json", full)
    prepare(mpy.cwd, __import__("json").loads(full))  # the factory image, v1.28.0
    return {"TK_SIM_PARTS": str(mpy.cwd), "TK_SIM_BOARD": str(mpy.cwd / "board-full.json")}


FW_JOB = (
    'job({"operation": "thingkit.ota", "version": "1.29.0", "kind": "firmware", '
    '"streamId": "s-9", "fileId": 0, "size": 4000}, "j9")'
)


def test_firmware_job_on_a_table_without_ota_partitions_fails_before_download(mpy) -> None:
    # The stock ESP32_GENERIC table: get_next_update() raises ENOENT. The job ends FAILED
    # with the reason at once: no stream request, no state on flash, no loop.
    _key(mpy)
    env = _table(mpy, "sim")
    out = mpy.one(
        """
        agent.subscriptions()
        c.inject(J + b"start-next/accepted", FW_JOB_)
        run()
        run()
        out({"pubs": c.published(), "state": os.listdir("ota") if "ota" in os.listdir()
             else []})
        """.replace("FW_JOB_", FW_JOB),
        prelude=PRELUDE + FW_HAL,
        env=env,
    )
    topics = [t for t, _ in out["pubs"]]
    assert not any("/streams/" in t for t in topics), topics
    ups = [b for t, b in out["pubs"] if t == "$aws/things/kit-1/jobs/j9/update"]
    assert len(ups) == 1 and ups[0]["status"] == "FAILED", ups
    reason = ups[0]["statusDetails"]["reason"]
    assert reason.startswith("no_ota_partitions: firmware updates need the -OTA"), reason
    assert "runs factory" in reason and "ESP32_GENERIC-OTA" in reason, reason
    assert topics.count("$aws/things/kit-1/jobs/start-next") == 1  # then the next job
    assert "job.json" not in out["state"]


def test_firmware_job_on_the_ota_table_targets_ota_1_against_the_runtime_version(mpy) -> None:
    # The -OTA table: the job is taken, ota_1 is the target, and versions are compared
    # with the runtime's (the factory image's descriptor says v1.28.0), not the app's.
    _key(mpy)
    env = _table(mpy, "sim-ota")
    out = mpy.json(
        """
        from tk import ota
        agent.subscriptions()
        c.inject(J + b"start-next/accepted", FW_JOB_)
        run()
        out({"job": json.load(open("ota/job.json")), "rt": ota.runtime_version(agent.hal),
             "pubs": [t for t, _ in c.published()]})
        c.inject(J + b"start-next/accepted", job({"operation": "thingkit.ota",
            "version": "1.28.0", "kind": "firmware", "streamId": "s", "size": 9}, "j8"))
        c.pubs = []
        run()
        out({"pubs": c.published()})
        """.replace("FW_JOB_", FW_JOB),
        prelude=PRELUDE + FW_HAL,
        env=env,
    )
    first, same = out
    assert first["rt"] == "v1.28.0"
    assert first["job"]["slot"] == "ota_1" and first["job"]["run"] == "1.28.0", first
    assert "$aws/things/kit-1/streams/s-9/get/json" in first["pubs"]
    # 1.28.0 is the running runtime: refused as the same version, whatever the app's.
    ups = [b for t, b in same["pubs"] if t.endswith("/j8/update")]
    assert ups and ups[0]["status"] == "REJECTED", same
    assert ups[0]["statusDetails"]["reason"].startswith("same_version: version 1.28.0"), ups


# As the sim's board layer does: the Partition module is imported when asked for.
LAZY_HAL = """
def _partition(self):
    from sim_board.partitions import Partition
    return Partition
Hal.partition = _partition
agent.hal = Hal()
"""


def test_runtime_version_is_read_once_and_leaves_no_module_loaded(mpy) -> None:
    # What the shadow and the jobs report as the runtime: the running image's app
    # descriptor (the kit's factory image says v1.28.0). Reading it must not keep the
    # partition code in the heap: tk.ota_image goes, and so does the board's Partition
    # module when it was loaded from the filesystem (the sim's; a board's is built in).
    env = _table(mpy, "sim")
    out = mpy.one(
        """
        import sys
        from tk import ota
        rt = ota.runtime_version(agent.hal)
        left = [m for m in sys.modules if "partition" in m or m == "tk.ota_image"]
        import sim_board
        out({"rt": rt, "again": ota.runtime_version(agent.hal), "left": left,
             "attr": hasattr(sim_board, "partitions")})
        """,
        prelude=PRELUDE + LAZY_HAL,
        env=env,
    )
    assert out == {"rt": "v1.28.0", "again": "v1.28.0", "left": [], "attr": False}, out
