"""Provisioning templates: just-in-time provisioning (JITP) and fleet provisioning by claim.

Both make the same resources the bulk registration makes, so a device provisioned either
way looks the same: a thing named by the naming convention, of the fleet's thing type, in
its static groups, with the device policy attached to its certificate.

- JITP (attached to the registered CA with ``registrationConfig``): the thing name is the
  certificate's CN (``AWS::IoT::Certificate::CommonName``), which thingkit's naming
  convention already made the thing name.
- Fleet provisioning by claim (``CreateProvisioningTemplate``): a device holding the claim
  certificate sends a CSR and its ``SerialNumber`` and ``Model``; the thing is named
  ``<Model>-<SerialNumber>``, the default naming convention.
"""

from __future__ import annotations

import json


def _thing_resource(thing_name: object, thing_type: str, groups: list[str], attrs: dict) -> dict:
    props: dict = {"ThingName": thing_name, "ThingTypeName": thing_type}
    if groups:
        props["ThingGroups"] = list(groups)
    if attrs:
        props["AttributePayload"] = attrs
    return {
        "Type": "AWS::IoT::Thing",
        "OverrideSettings": {
            "AttributePayload": "MERGE",
            "ThingTypeName": "REPLACE",
            "ThingGroups": "DO_NOTHING",
        },
        "Properties": props,
    }


def jitp_template(thing_type: str, groups: list[str], policy_name: str) -> str:
    """The JITP template body (a JSON string, as ``registrationConfig.templateBody``)."""
    doc = {
        "Parameters": {
            "AWS::IoT::Certificate::CommonName": {"Type": "String"},
            "AWS::IoT::Certificate::Id": {"Type": "String"},
        },
        "Resources": {
            "thing": _thing_resource(
                {"Ref": "AWS::IoT::Certificate::CommonName"}, thing_type, groups, {}
            ),
            "certificate": {
                "Type": "AWS::IoT::Certificate",
                "Properties": {
                    "CertificateId": {"Ref": "AWS::IoT::Certificate::Id"},
                    "Status": "ACTIVE",
                },
            },
            "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": policy_name}},
        },
    }
    return json.dumps(doc, separators=(",", ":"))


def fleet_template(thing_type: str, groups: list[str], policy_name: str) -> str:
    """The fleet-provisioning template body (``CreateProvisioningTemplate.templateBody``)."""
    doc = {
        "Parameters": {
            "SerialNumber": {"Type": "String"},
            "Model": {"Type": "String"},
            "AWS::IoT::Certificate::Id": {"Type": "String"},
        },
        "Resources": {
            "thing": _thing_resource(
                {"Fn::Join": ["-", [{"Ref": "Model"}, {"Ref": "SerialNumber"}]]},
                thing_type,
                groups,
                {"serial": {"Ref": "SerialNumber"}, "model": {"Ref": "Model"}},
            ),
            "certificate": {
                "Type": "AWS::IoT::Certificate",
                "Properties": {
                    "CertificateId": {"Ref": "AWS::IoT::Certificate::Id"},
                    "Status": "ACTIVE",
                },
            },
            "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": policy_name}},
        },
        "DeviceConfiguration": {},
    }
    return json.dumps(doc, separators=(",", ":"))
