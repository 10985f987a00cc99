"""Provision a fleet (default 10,000 devices) and compare its rate with two baselines
measured in the same run.

- fleet: ``provision_fleet`` as a user calls it, on every core: EC P-256 key, certificate,
  config, the ledger line (fsync'd), duplicate checks, output manifests (figure 1); then
  the littlefs image of every device (figure 2). Figure 1 is the wall time from the call
  to the identities being durable and the manifests written, start-up of the worker
  processes included (with ``--no-images`` it is the whole call).
- raw: a bare ``cryptography`` loop on one core, key generation plus signing a certificate
  of the same profile, nothing else (no serialisation, no I/O).
- openssl: the usual shell loop, one device at a time, ``openssl req -newkey ec`` then
  ``openssl x509 -req`` signing with the same issuing CA.

Each round measures raw then fleet, back to back; the figures are medians over the rounds
(``--rounds``). Other work on the machine moves both, the fleet most (it needs every core,
the raw loop one): each round also shows the load average and the share of its cores each
got (CPU time over wall time), and a note says when the fleet did not have its cores.

Target: the fleet's identity rate is at least 1.8x the raw single-core rate (issue 18),
at 2,000 and at 10,000 devices, on 2 cores.

    .venv/bin/python -m benchmarks.provision_fleet --count 10000
    .venv/bin/python -m benchmarks.provision_fleet --count 2000 --no-images --rounds 5
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from host_tools.boards.registry import load_board
from provisioning.ca import CertificateAuthority
from provisioning.fleet import FleetSpec, provision_fleet
from provisioning.manifest import assign_names, generated_records

TARGET = 1.8
# Below this share of its cores (CPU time / wall time / jobs), the fleet was not alone.
BUSY_SHARE = 0.9


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the fleet's workers)."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def raw_loop(ca: CertificateAuthority, n: int) -> float:
    """Devices per second: keygen + sign, same certificate profile, one core, no I/O."""
    issuer, ikey = ca.issuing.cert, ca.issuing.key
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ikey.public_key())
    ku = x509.KeyUsage(True, False, False, False, True, False, False, False, False)
    eku = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    t0 = time.perf_counter()
    for i in range(n):
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"raw-{i}")]))
            .issuer_name(issuer.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1825))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(ku, critical=True)
            .add_extension(eku, critical=False)
            .add_extension(aki, critical=False)
            .sign(ikey, hashes.SHA256())
        )
    return n / (time.perf_counter() - t0)


EXT = """basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyAgreement
extendedKeyUsage=clientAuth
authorityKeyIdentifier=keyid
"""


def openssl_loop(ca: CertificateAuthority, n: int, work: Path) -> float:
    """Devices per second: one ``openssl req`` + one ``openssl x509`` per device."""
    work.mkdir(parents=True, exist_ok=True)
    ca_crt, ca_key, ext = work / "issuing.crt", work / "issuing.key", work / "ext.cnf"
    ca_crt.write_bytes(ca.issuing.cert_pem)
    ca_key.write_bytes(ca.issuing.key_pem())
    ext.write_text(EXT)
    t0 = time.perf_counter()
    for i in range(n):
        k, csr, crt = work / f"d{i}.key", work / f"d{i}.csr", work / f"d{i}.crt"
        subprocess.run(
            [
                "openssl",
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                str(k),
                "-subj",
                f"/CN=ossl-{i}",
                "-out",
                str(csr),
            ],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                "openssl",
                "x509",
                "-req",
                "-in",
                str(csr),
                "-CA",
                str(ca_crt),
                "-CAkey",
                str(ca_key),
                "-set_serial",
                str(0x1000 + i),
                "-days",
                "1825",
                "-sha256",
                "-extfile",
                str(ext),
                "-out",
                str(crt),
            ],
            check=True,
            capture_output=True,
        )
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=10_000, help="devices to provision")
    p.add_argument("--raw-count", type=int, default=3000, help="devices in the raw loop")
    p.add_argument("--openssl-count", type=int, default=200, help="devices in the openssl loop")
    p.add_argument("--jobs", type=int, default=os.cpu_count(), help="worker processes")
    p.add_argument("--no-images", action="store_true", help="skip figure 2")
    p.add_argument("--work", type=Path, help="work directory (default: a temporary one)")
    p.add_argument("--rounds", type=int, default=3, help="raw + fleet rounds (medians)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    work = args.work or Path(tempfile.mkdtemp(prefix="tk-bench-"))
    try:
        ca = CertificateAuthority.create(work / "ca", "Benchmark fleet")
        ossl = openssl_loop(ca, args.openssl_count, work / "openssl")
        spec = FleetSpec.for_board(
            "abc123-ats.iot.eu-west-1.amazonaws.com",
            load_board("esp32-devkitc"),
            region="eu-west-1",
        )
        recs, _ = assign_names(generated_records(args.count, "esp32-devkitc"))
        rounds = []
        for r in range(max(1, args.rounds)):
            c0, t0 = _cpu(), time.perf_counter()
            raw = raw_loop(ca, args.raw_count)
            raw_share = (_cpu() - c0) / (time.perf_counter() - t0)
            out = work / f"fleet-{r}"
            c0, t0 = _cpu(), time.perf_counter()
            res = provision_fleet(
                ca,
                spec,
                recs,
                out,
                ca.root_der,
                images=not args.no_images,
                jobs=args.jobs,
                extra_files={"board.json": b"{}\n"},
            )
            call = time.perf_counter() - t0
            fleet_share = (_cpu() - c0) / (call * max(1, args.jobs))
            assert res.issued == args.count and not res.refused, res.refused[:3]
            # The identities figure: the whole call, or up to the images if any are built.
            seconds = call if args.no_images else res.identity_seconds
            rounds.append(
                {
                    "raw": raw,
                    "rate": args.count / seconds,
                    "seconds": seconds,
                    "ratio": args.count / seconds / raw,
                    "load": os.getloadavg()[0],
                    # CPU each got over its wall time: 1 core for raw, --jobs cores for the
                    # fleet on an idle machine; less means other work took cores from it.
                    "raw_cpu_share": raw_share,
                    "fleet_cpu_share": fleet_share,
                    "res": res,
                }
            )
            if r < args.rounds - 1:
                shutil.rmtree(out, ignore_errors=True)
        rate = statistics.median(x["rate"] for x in rounds)
        raw = statistics.median(x["raw"] for x in rounds)
        ratio = statistics.median(x["ratio"] for x in rounds)
        res = rounds[-1]["res"]
        img_rate = res.images / res.artifact_seconds if res.images else 0.0
        doc = {
            "devices": args.count,
            "cores": os.cpu_count(),
            "jobs": args.jobs,
            "rounds": len(rounds),
            "fleet_identities_per_s": round(rate, 1),
            "fleet_identity_seconds": round(statistics.median(x["seconds"] for x in rounds), 3),
            "images": res.images,
            "images_per_s": round(img_rate, 1),
            "image_seconds": round(res.artifact_seconds, 2),
            "total_seconds": round(res.seconds, 2),
            "raw_single_core_per_s": round(raw, 1),
            "openssl_loop_per_s": round(ossl, 1),
            "ratio_vs_raw": round(ratio, 3),
            "ratio_vs_raw_per_round": [round(x["ratio"], 3) for x in rounds],
            "load_average_per_round": [round(x["load"], 2) for x in rounds],
            "raw_cpu_share_per_round": [round(x["raw_cpu_share"], 2) for x in rounds],
            "fleet_cpu_share_per_round": [round(x["fleet_cpu_share"], 2) for x in rounds],
            "ratio_vs_openssl": round(rate / ossl, 1),
            "target_vs_raw": TARGET,
            "met": ratio >= TARGET,
        }
        if args.json:
            print(json.dumps(doc, indent=1))
        else:
            print(
                f"fleet:   {args.count} identities+configs+manifest in "
                f"{doc['fleet_identity_seconds']:.2f} s = {rate:.0f}/s ({args.jobs} processes, "
                f"{os.cpu_count()} cores; median of {len(rounds)} rounds)"
            )
            if res.images:
                print(
                    f"images:  {res.images} littlefs images in {res.artifact_seconds:.2f} s "
                    f"= {img_rate:.0f}/s"
                )
            print(
                f"raw:     cryptography keygen+sign, 1 core: {raw:.0f}/s ({args.raw_count} devices"
                ", median)"
            )
            print(f"openssl: per-device command loop: {ossl:.1f}/s ({args.openssl_count} devices)")
            per_round = ", ".join(
                f"{x['ratio']:.2f} (load {x['load']:.1f}, CPU got: raw "
                f"{x['raw_cpu_share']:.2f}, fleet {x['fleet_cpu_share']:.2f})"
                for x in rounds
            )
            print(
                f"ratio vs raw single core: {ratio:.2f} median (target >= {TARGET:.2f}: "
                f"{'met' if doc['met'] else 'NOT met'}); rounds: {per_round}; "
                f"ratio vs openssl loop: {rate / ossl:.0f}x"
            )
            share = statistics.median(x["fleet_cpu_share"] for x in rounds)
            if share < BUSY_SHARE:
                print(
                    f"note: the fleet got {share:.0%} of its {args.jobs} cores (median); "
                    f"below {BUSY_SHARE:.0%}, other work was probably holding them: run on "
                    "an idle machine for the figure"
                )
            print(
                f"total {res.seconds:.1f} s for {args.count} devices "
                f"(identities, configs, manifest{', images' if res.images else ''})"
            )
        return 0 if doc["met"] else 1
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
