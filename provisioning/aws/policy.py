"""IoT policies: the device policy, the claim policy, and the wildcard check.

The device policy grants a certificate exactly what the bench ACL grants a thing
(``host_tools/bench/acl.py``), on AWS's terms (IoT Lens BP 1.2, ``lens.least_privilege``):

- connect only with client id = its thing name (``${iot:Connection.Thing.ThingName}``,
  which AWS sets only for the thing the certificate is attached to, and only when the
  client id equals the thing name), and only while that thing is attached;
- publish to, subscribe to and receive only its own topics
  ``<prefix>/<thing>/{status,ping,pong,telemetry,diag}``;
- its own classic shadow and its named shadows (``app2``, ``diag``): requests and replies;
- its own jobs topics that do not name a job (``get``, ``start-next``, ``notify``,
  ``notify-next`` and their replies; ``$next`` for describe).

Every action is named (no ``iot:*``) and every resource is a full ARN in this account and
region with no ``*`` or ``?`` wildcard. Job updates and file-delivery streams name the job
and the stream (``jobs/<jobId>/update``, ``streams/<streamId>/get/json``), so a policy
without wildcards cannot list them in advance: :func:`ota_policy` makes one policy per
rollout job, attached by ``thingkit ota deploy`` to the targets' certificates only.
:func:`wildcards` finds any wildcard in a policy; a plan refuses to run with one.

Example::

    doc = device_policy("eu-west-1", "123456789012")
    assert wildcards(doc) == []
"""

from __future__ import annotations

THING = "${iot:Connection.Thing.ThingName}"
DEVICE_TOPICS = ("status", "ping", "pong", "telemetry", "diag")
# What the device publishes on its own topics, and what it subscribes to.
DEVICE_PUBLISHES = ("status", "pong", "telemetry", "diag")
DEVICE_SUBSCRIBES = ("ping",)
NAMED_SHADOWS = ("app2", "diag")
_SHADOW_OPS = ("get", "update", "delete")
_SHADOW_REPLIES = {
    "get": ("accepted", "rejected"),
    "update": ("accepted", "rejected", "delta", "documents"),
    "delete": ("accepted", "rejected"),
}
_JOBS_REQUESTS = ("get", "start-next", "$next/get")
_JOBS_NOTIFY = ("notify", "notify-next")


def _arn(region: str, account: str, kind: str, name: str, partition: str = "aws") -> str:
    return f"arn:{partition}:iot:{region}:{account}:{kind}/{name}"


def shadow_bases(thing: str = THING, named: tuple[str, ...] = NAMED_SHADOWS) -> list[str]:
    base = f"$aws/things/{thing}/shadow"
    return [base] + [f"{base}/name/{n}" for n in named]


def device_topics(prefix: str = "thingkit", thing: str = THING, named=NAMED_SHADOWS) -> dict:
    """The topics a device uses, by what it does with them: publish, subscribe/receive."""
    own = f"{prefix}/{thing}"
    publish = [f"{own}/{t}" for t in DEVICE_PUBLISHES]
    receive = [f"{own}/{t}" for t in DEVICE_SUBSCRIBES]
    # certificate rotation over the air: the kit sends its CSR, the operator answers
    publish.append(f"{own}/identity/csr")
    receive += [f"{own}/identity/csr/accepted", f"{own}/identity/csr/rejected"]
    for base in shadow_bases(thing, named):
        for op in _SHADOW_OPS:
            publish.append(f"{base}/{op}")
            receive += [f"{base}/{op}/{r}" for r in _SHADOW_REPLIES[op]]
    jobs = f"$aws/things/{thing}/jobs"
    for req in _JOBS_REQUESTS:
        publish.append(f"{jobs}/{req}")
        receive += [f"{jobs}/{req}/accepted", f"{jobs}/{req}/rejected"]
    receive += [f"{jobs}/{n}" for n in _JOBS_NOTIFY]
    return {"publish": publish, "receive": receive}


def device_policy(
    region: str,
    account: str,
    prefix: str = "thingkit",
    named_shadows: tuple[str, ...] = NAMED_SHADOWS,
    partition: str = "aws",
) -> dict:
    """The least-privilege device policy document (see the module docstring)."""
    t = device_topics(prefix, THING, named_shadows)

    def arns(kind: str, names: list[str]) -> list[str]:
        return [_arn(region, account, kind, n, partition) for n in names]

    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ConnectAsOwnThing",
                "Effect": "Allow",
                "Action": "iot:Connect",
                "Resource": _arn(region, account, "client", THING, partition),
                "Condition": {"Bool": {"iot:Connection.Thing.IsAttached": "true"}},
            },
            {
                "Sid": "PublishOwnTopics",
                "Effect": "Allow",
                "Action": "iot:Publish",
                "Resource": arns("topic", t["publish"]),
            },
            {
                "Sid": "SubscribeOwnTopics",
                "Effect": "Allow",
                "Action": "iot:Subscribe",
                "Resource": arns("topicfilter", t["receive"]),
            },
            {
                "Sid": "ReceiveOwnTopics",
                "Effect": "Allow",
                "Action": "iot:Receive",
                "Resource": arns("topic", t["receive"]),
            },
        ],
    }


def ota_topics(job_id: str, stream_id: str, thing: str = THING) -> dict:
    """The topics one OTA job needs beyond the device policy: its job execution and its
    stream (AWS IoT MQTT-based file delivery, JSON)."""
    job = f"$aws/things/{thing}/jobs/{job_id}"
    stream = f"$aws/things/{thing}/streams/{stream_id}"
    publish = [f"{job}/update", f"{job}/get", f"{stream}/get/json", f"{stream}/describe/json"]
    receive = [f"{job}/{op}/{r}" for op in ("update", "get") for r in ("accepted", "rejected")]
    receive += [f"{stream}/{t}/json" for t in ("data", "description", "rejected")]
    return {"publish": publish, "receive": receive}


def ota_policy(
    region: str, account: str, job_id: str, stream_id: str, partition: str = "aws"
) -> dict:
    """Least-privilege grant for one OTA job: each device reaches only its own execution
    of ``job_id`` and its own view of ``stream_id`` (no wildcard)."""
    t = ota_topics(job_id, stream_id)

    def arns(kind: str, names: list[str]) -> list[str]:
        return [_arn(region, account, kind, n, partition) for n in names]

    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "OtaRequests", "Effect": "Allow", "Action": "iot:Publish",
             "Resource": arns("topic", t["publish"])},
            {"Sid": "OtaSubscribe", "Effect": "Allow", "Action": "iot:Subscribe",
             "Resource": arns("topicfilter", t["receive"])},
            {"Sid": "OtaReceive", "Effect": "Allow", "Action": "iot:Receive",
             "Resource": arns("topic", t["receive"])},
        ],
    }  # fmt: skip


def claim_policy(region: str, account: str, template: str, partition: str = "aws") -> dict:
    """What a claim certificate may do: fleet provisioning's MQTT API, nothing else."""
    csr = "$aws/certificates/create-from-csr/json"
    prov = f"$aws/provisioning-templates/{template}/provision/json"
    replies = [f"{csr}/accepted", f"{csr}/rejected", f"{prov}/accepted", f"{prov}/rejected"]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ConnectForProvisioning",
                "Effect": "Allow",
                "Action": "iot:Connect",
                "Resource": _arn(region, account, "client", "${iot:ClientId}", partition),
            },
            {
                "Sid": "ProvisioningRequests",
                "Effect": "Allow",
                "Action": "iot:Publish",
                "Resource": [_arn(region, account, "topic", t, partition) for t in (csr, prov)],
            },
            {
                "Sid": "ProvisioningReplies",
                "Effect": "Allow",
                "Action": "iot:Subscribe",
                "Resource": [_arn(region, account, "topicfilter", t, partition) for t in replies],
            },
            {
                "Sid": "ReceiveReplies",
                "Effect": "Allow",
                "Action": "iot:Receive",
                "Resource": [_arn(region, account, "topic", t, partition) for t in replies],
            },
        ],
    }


def _as_list(v: object) -> list:
    return v if isinstance(v, list) else [v]


def wildcards(doc: dict) -> list[str]:
    """Every wildcard in a policy document: ``*`` or ``?`` in an action or a resource.

    Policy variables (``${iot:...}``) are not wildcards. An MQTT ``+`` or ``#`` in a
    resource is reported too: AWS matches them literally in ``topicfilter`` resources, so
    they are either a mistake or an attempt at a wildcard.
    """
    found = []
    for i, st in enumerate(doc.get("Statement", [])):
        for key in ("Action", "NotAction"):
            for a in _as_list(st.get(key, [])):
                if "*" in a or "?" in a:
                    found.append(f"statement {i}: {key} {a}")
        for key in ("Resource", "NotResource"):
            for r in _as_list(st.get(key, [])):
                bare = r.replace("${iot:Connection.Thing.ThingName}", "").replace(
                    "${iot:ClientId}", ""
                )
                if any(c in bare for c in "*?+#"):
                    found.append(f"statement {i}: {key} {r}")
        if "NotAction" in st or "NotResource" in st:
            found.append(f"statement {i}: NotAction/NotResource grant everything else")
    return found
