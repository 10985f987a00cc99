"""Tests for the ``thingkit`` command line: parsing, dispatch, exit codes, error lines."""

from __future__ import annotations

import hashlib
import json
import urllib.request
from pathlib import Path

import pytest

from host_tools import cli, device_deps
from host_tools.bench.bench import Bench
from host_tools.bench.ntp_server import read_control
from host_tools.cli import bench_cmds, kit_cmds
from host_tools.validate import cli as validate_cli
from host_tools.errors import UserError

MOSQUITTO = Path("/usr/sbin/mosquitto")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_error_line(err: str, expected: str) -> None:
    """One error line; progress lines (``thingkit: <step>…``, work under way) may precede it."""
    assert "Traceback" not in err
    assert [ln for ln in err.splitlines() if not ln.endswith("…")] == [expected]


# -- parser -------------------------------------------------------------------------------
def parse(*argv: str):
    return cli.build_parser().parse_args(list(argv))


def test_parse_bench_commands() -> None:
    a = parse("bench", "up", "--port", "18883", "--bench-root", "/x/bench")
    assert (a.command, a.sub, a.func, a.port, a.bench_root) == (
        "bench",
        "up",
        bench_cmds.cmd_bench_up,
        18883,
        Path("/x/bench"),
    )
    a = parse("bench", "up")
    assert (a.port, a.bench_root) == (None, None)
    # the option's name in earlier releases is still accepted, and hidden from --help
    assert parse("bench", "up", "--root", "/y").bench_root == Path("/y")
    a = parse("bench", "down")
    assert a.func is bench_cmds.cmd_bench_down
    a = parse("bench", "status", "--json")
    assert (a.func, a.json) == (bench_cmds.cmd_bench_status, True)
    assert parse("bench", "status").json is False
    a = parse("bench", "ntp", "--offset", "-30.5", "--block")
    assert (a.func, a.offset, a.block) == (bench_cmds.cmd_bench_ntp, -30.5, True)
    a = parse("bench", "ntp")
    assert (a.offset, a.block) == (0.0, False)


def test_parse_kit_commands() -> None:
    a = parse("kit", "create", "kit-1", "--heap", "64k", "--mode", "source", "--bench-root", "r")
    assert (a.func, a.name, a.heap, a.mode, a.bench_root) == (
        kit_cmds.cmd_kit_create,
        "kit-1",
        "64k",
        "source",
        Path("r"),
    )
    a = parse("kit", "create", "kit-1")
    assert (a.heap, a.mode) == (None, None)
    for sub, func in (
        ("start", kit_cmds.cmd_kit_start),
        ("stop", kit_cmds.cmd_kit_stop),
        ("console", kit_cmds.cmd_kit_console),
        ("set-time", kit_cmds.cmd_kit_set_time),
    ):
        a = parse("kit", sub, "kit-9")
        assert (a.func, a.name) == (func, "kit-9")
    assert parse("kit", "set-time", "kit-1", "2024-01-02 03:04:05").when == "2024-01-02 03:04:05"
    assert parse("kit", "set-time", "kit-1").when is None


def test_parse_validate_and_deps() -> None:
    a = parse("validate", "--json", "--workdir", "w")
    assert (a.func, a.board, a.json, a.workdir) == (validate_cli.cmd_validate, "sim", True, Path("w"))
    a = parse("validate", "--board", "esp32")
    assert (a.board, a.json, a.workdir) == ("esp32", False, None)
    assert parse("deps", "fetch").func is bench_cmds.cmd_deps_fetch
    assert parse("-v", "bench", "status").verbose is True


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["bench"],
        ["kit"],
        ["deps"],
        ["kit", "start"],
        ["bench", "launch"],
        ["flash"],
        ["bench", "up", "--port", "x"],
    ],
)
def test_parse_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert "usage: thingkit" in capsys.readouterr().err


# -- bench commands ---------------------------------------------------------------------------
def test_bench_status_of_empty_root_is_down(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = run(capsys, "bench", "status", "--bench-root", str(tmp_path))
    assert rc == 3
    assert err == ""
    assert out.splitlines() == [
        f"bench down ({tmp_path.resolve()})",
        "  broker   pid None port None stopped",
        "  services pid None stopped; ntp port None",
        "  things   (none)",
    ]


def test_bench_status_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "bench", "status", "--json", "--bench-root", str(tmp_path))
    assert rc == 3
    assert json.loads(out) == {
        "root": str(tmp_path.resolve()),
        "up": False,
        "broker": {"pid": None, "port": None, "alive": False},
        "services": {"pid": None, "alive": False},
        "ntp_port": None,
        "things": [],
    }


def test_bench_ntp_refuses_when_bench_down(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A bench directory but no bench running: nothing answers NTP, so nothing is "set".
    rc, out, err = run(
        capsys, "bench", "ntp", "--bench-root", str(tmp_path), "--offset", "-12.5", "--block"
    )
    assert (rc, out) == (1, "")
    assert_one_error_line(
        err,
        "thingkit: the bench is not running; start it with: thingkit bench up "
        f"--bench-root {tmp_path.resolve()}",
    )
    assert read_control(tmp_path / "ntp.json") == {}


def test_bench_ntp_without_bench_dir_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _, err = run(capsys, "bench", "ntp", "--bench-root", str(tmp_path / "never-started"))
    assert rc == 1
    assert len(err.splitlines()) == 1 and err.startswith("thingkit: ")


def test_bench_down_when_nothing_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "bench", "down", "--bench-root", str(tmp_path))
    assert (rc, out, err) == (0, "bench down\n", "")


@pytest.mark.skipif(not MOSQUITTO.exists(), reason="mosquitto not installed")
def test_bench_up_status_down(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "bench"
    try:
        rc, out, _ = run(capsys, "bench", "up", "--bench-root", str(root))
        assert rc == 0
        st = Bench(root).state
        assert out.startswith("bench up in ")
        assert out.rstrip("\n").endswith(
            f"s: mqtts://localhost:{st['broker_port']} (TLS 1.2, client certificates), "
            f"ntp 127.0.0.1:{st['ntp_port']}, state {root.resolve()}"
        )
        rc, out, _ = run(capsys, "bench", "status", "--json", "--bench-root", str(root))
        doc = json.loads(out)
        assert rc == 0 and doc["up"] is True
        assert doc["broker"] == {"pid": st["broker_pid"], "port": st["broker_port"], "alive": True}
        rc, out, _ = run(capsys, "bench", "down", "--bench-root", str(root))
        assert (rc, out) == (0, "bench down\n")
        rc, _, _ = run(capsys, "bench", "status", "--bench-root", str(root))
        assert rc == 3
    finally:
        Bench(root).down()


# -- kit commands ---------------------------------------------------------------------------
def test_kit_start_unknown_kit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "kit", "start", "nosuchkit", "--bench-root", str(tmp_path / "bench"))
    assert rc == 1
    assert out == ""
    assert_one_error_line(
        err, "thingkit: no kit named nosuchkit; see thingkit kit create nosuchkit"
    )


@pytest.mark.parametrize("sub", ["stop", "console", "set-time"])
def test_other_kit_commands_on_unknown_kit(
    sub: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _, err = run(capsys, "kit", sub, "ghost", "--bench-root", str(tmp_path / "bench"))
    assert rc == 1
    assert_one_error_line(err, "thingkit: no kit named ghost; see thingkit kit create ghost")


def test_kit_create_needs_bench(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(capsys, "kit", "create", "kit-1", "--bench-root", str(tmp_path / "bench"))
    assert rc == 1
    assert_one_error_line(
        err,
        f"thingkit: the bench is not running; start it with: thingkit bench up --bench-root "
        f"{(tmp_path / 'bench').resolve()}",
    )
    assert not (tmp_path / "kits").exists()


@pytest.fixture
def kit_dir(tmp_path: Path) -> Path:
    d = tmp_path / "kits" / "kit-1"
    d.mkdir(parents=True)
    (d / "console.log").write_text("boot\nshadow synced\n")
    return d


def test_kit_console(kit_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "kit", "console", "kit-1", "--bench-root", str(tmp_path / "bench"))
    assert (rc, out) == (0, "boot\nshadow synced\n")


def test_kit_set_time(kit_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(
        capsys, "kit", "set-time", "kit-1", "2024-05-06 07:08:09", "--bench-root", str(tmp_path / "bench")
    )
    assert rc == 0
    assert out == "kit kit-1: RTC set to 2024-05-06 07:08:09 UTC\n"
    assert (kit_dir / "rtc").read_text() == "@2024-05-06 07:08:09\n"


def test_kit_stop_when_not_running(
    kit_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, _ = run(capsys, "kit", "stop", "kit-1", "--bench-root", str(tmp_path / "bench"))
    assert (rc, out) == (0, "kit kit-1 powered off\n")


@pytest.mark.skipif(not MOSQUITTO.exists(), reason="mosquitto not installed")
def test_kit_create_invalid_name_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from host_tools.kit.sim import SimKit

    monkeypatch.setattr(SimKit, "install_firmware", lambda self, **kw: [])  # no flashing needed
    root = tmp_path / "bench"
    try:
        Bench(root).up()
        rc = cli.main(["kit", "create", "bad#name", "--bench-root", str(root)])
        err = capsys.readouterr().err
        assert rc == 1
        assert_one_error_line(
            err,
            "thingkit: thing name 'bad#name' is not valid: use 1-64 letters, digits, '_' or '-'",
        )
    finally:
        Bench(root).down()


# -- validate / deps --------------------------------------------------------------------------
def test_validate_unknown_board(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "validate", "--board", "esp32-devkitc")
    assert rc == 1 and out == ""
    assert_one_error_line(
        err,
        "thingkit: validate --target sim runs a virtual kit: board esp32-devkitc is a real "
        "board; give a virtual board (sim, sim-ota, sim-romfs), or validate the real one with "
        "--target serial --port URL --board esp32-devkitc",
    )


def test_deps_fetch_hash_mismatch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THINGKIT_CACHE", str(tmp_path))
    pinned = "0" * 64
    monkeypatch.setattr(
        device_deps,
        "packages",
        lambda: {
            "demo": {
                "version": "1",
                "url": "https://example.invalid/d.tgz",
                "sha256": pinned,
                "files": {"a.py": "lib/a.py"},
            },
        },
    )

    class Resp:
        def __enter__(self):
            return self

        def __exit__(self, *a: object) -> None:
            return None

        def read(self) -> bytes:
            return b"tampered"

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=0: Resp())
    rc, _, err = run(capsys, "deps", "fetch")
    assert rc == 1
    digest = hashlib.sha256(b"tampered").hexdigest()
    assert_one_error_line(
        err,
        f"thingkit: device package demo failed its hash check; got sha256 {digest}, "
        f"pinned {pinned}; see {device_deps.DEPS_FILE}",
    )
    assert list(tmp_path.iterdir()) == []


# -- error handling in main -------------------------------------------------------------------
def test_main_user_error_from_any_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(args):
        raise UserError("it broke", "a cause", "some.log")

    monkeypatch.setattr(bench_cmds, "open_bench", boom)
    rc, out, err = run(capsys, "bench", "down", "--bench-root", str(tmp_path))
    assert (rc, out) == (1, "")
    assert_one_error_line(err, "thingkit: it broke; a cause; see some.log")


def test_main_keyboard_interrupt_is_130(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench_cmds, "open_bench", interrupted)
    assert run(capsys, "bench", "down", "--bench-root", str(tmp_path))[0] == 130


def test_main_bug_keeps_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def bug(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(bench_cmds, "open_bench", bug)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["bench", "down", "--bench-root", str(tmp_path)])


def test_version_option_prints_the_installed_version(capsys) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"thingkit {version('thingkit')}")


def test_a_provisioning_error_is_one_line_without_traceback(tmp_path, capsys) -> None:
    # Every provisioning error class shares one base, handled once at the top of the CLI.
    from provisioning import bundle, ca, fleet, image, lifecycle, manifest, store
    from provisioning.errors import ProvisioningError

    for cls in (
        bundle.BundleError,
        ca.CAError,
        fleet.FleetError,
        image.ImageError,
        lifecycle.LifecycleError,
        manifest.ManifestError,
        store.StoreError,
    ):
        assert issubclass(cls, ProvisioningError), cls
    rc = cli.main(["provision", "--manifest", str(tmp_path / "missing.csv"), "--dry-run"])
    err = capsys.readouterr().err
    assert rc != 0 and err.startswith("thingkit: ") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
