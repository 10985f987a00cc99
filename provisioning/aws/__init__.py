"""Registering a fleet with AWS IoT Core through boto3: plan, apply, teardown.

- :mod:`provisioning.aws.policy`: the device policy (least privilege with policy
  variables), the claim policy, and the wildcard check every plan passes;
- :mod:`provisioning.aws.templates`: the just-in-time and fleet-provisioning templates;
- :mod:`provisioning.aws.plan`: the list of API calls a registration needs;
- :mod:`provisioning.aws.apply`: running a plan idempotently under a rate limit, with
  retries, recording what it created so that teardown removes exactly that.
"""
