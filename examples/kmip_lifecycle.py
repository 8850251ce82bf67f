#!/usr/bin/env python3
"""A key's whole lifecycle over KMIP against kmsfs, with PyKMIP's ProxyKmipClient, the client
many backup products' integrations are tested with.

    pip install pykmip==0.11.0        # in a virtual environment
    python3 kmip_lifecycle.py --host 127.0.0.1 --port 5696 \\
        --cert client.pem --key client.key --ca ca.pem [lifecycle]

Subcommands (default: lifecycle):
    lifecycle            create, register, activate, get, get attributes, locate, rename,
                         revoke, destroy: one JSON line per step on stdout
    create NAME [GROUP]  create an AES-256 key (in GROUP, else the client's default group)
    get UID              get a key (prints its SHA-256, never the key)
    activate UID | revoke UID | destroy UID
    attributes UID       get attributes

Exit status 0 when every step did what was expected, 1 when a step failed, 2 when the
connection failed (a certificate the server does not accept, say). With --step-by-step, the
lifecycle waits for a line on stdin after each step (a test checks the mount meanwhile).

Never prints a key: only its SHA-256.
"""

import argparse
import enum
import hashlib
import json
import sys

from kmip.core import enums
from kmip.core.exceptions import OperationFailure
from kmip.core import objects as cobjects
from kmip.core.factories import attributes as attribute_factory
from kmip.pie import objects
from kmip.pie.client import ProxyKmipClient
from kmip.pie.exceptions import KmipOperationFailure

ATTRS = attribute_factory.AttributeFactory()
STEP_BY_STEP = False


def say(step, **fields):
    print(json.dumps(dict(step=step, **fields)), flush=True)
    if STEP_BY_STEP:
        sys.stdin.readline()


def plain(value):
    """An attribute value as JSON: names as text, enumerations by name."""
    if hasattr(value, "name_value"):
        return value.name_value.value
    v = getattr(value, "value", value)
    if isinstance(v, enum.Enum):
        return v.name
    return v


def attributes_of(client, uid, names=None):
    _, attrs = client.get_attributes(uid, names)
    return {a.attribute_name.value: plain(a.attribute_value) for a in attrs}


def refused(fn):
    """Runs fn, which must fail: returns the KMIP result reason's name."""
    try:
        fn()
    except (KmipOperationFailure, OperationFailure) as e:
        return e.reason.name
    raise SystemExit("expected a KMIP failure, the operation succeeded")


def create_in_group(client, name, group, bits):
    """Create with an Object Group: ProxyKmipClient.create has no parameter for it, so the
    request is built as create() builds it, plus the attribute."""
    template = cobjects.TemplateAttribute(attributes=[
        ATTRS.create_attribute(enums.AttributeType.CRYPTOGRAPHIC_ALGORITHM,
                               enums.CryptographicAlgorithm.AES),
        ATTRS.create_attribute(enums.AttributeType.CRYPTOGRAPHIC_LENGTH, bits),
        ATTRS.create_attribute(enums.AttributeType.CRYPTOGRAPHIC_USAGE_MASK,
                               [enums.CryptographicUsageMask.ENCRYPT,
                                enums.CryptographicUsageMask.DECRYPT]),
        ATTRS.create_attribute(enums.AttributeType.NAME, name),
        ATTRS.create_attribute(enums.AttributeType.OBJECT_GROUP, group),
    ])
    result = client.proxy.create(enums.ObjectType.SYMMETRIC_KEY, template)
    if result.result_status.value != enums.ResultStatus.SUCCESS:
        raise KmipOperationFailure(result.result_status.value,
                                   result.result_reason.value,
                                   result.result_message.value)
    return result.uuid


def locate(client, kind, value):
    return client.locate(attributes=[ATTRS.create_attribute(kind, value)])


def sha256(key):
    return hashlib.sha256(key.value).hexdigest()


def lifecycle(client):
    aes = enums.CryptographicAlgorithm.AES
    first = client.create(aes, 256, name="nbu-key-1")
    say("create", uid=first)
    tape = create_in_group(client, "tape-1", "backup", 128)
    say("create_in_group", uid=tape)
    registered = client.register(objects.SymmetricKey(aes, 256, bytes(range(32)),
                                                      name="registered-1"))
    say("register", uid=registered)
    say("get_prelive", refused=refused(lambda: client.get(first)))
    client.activate(first)
    say("activate", uid=first)
    client.activate(registered)
    say("activate_other", uid=registered, demoted=first)
    key = client.get(registered)
    assert key.value == bytes(range(32)), "Get returned other bytes than Register gave"
    say("get", uid=registered, sha256=sha256(key), bits=key.cryptographic_length)
    say("get_inactive", uid=first, sha256=sha256(client.get(first)))
    say("get_attributes", uid=first, attributes=attributes_of(client, first))
    say("get_attribute_list", uid=first, names=sorted(client.get_attribute_list(first)))
    say("locate",
        by_name=locate(client, enums.AttributeType.NAME, "nbu-key-1"),
        by_group=locate(client, enums.AttributeType.OBJECT_GROUP, "backup"),
        by_state=locate(client, enums.AttributeType.STATE, enums.State.ACTIVE),
        by_length=locate(client, enums.AttributeType.CRYPTOGRAPHIC_LENGTH, 128))
    client.modify_attribute(
        unique_identifier=first,
        attribute=ATTRS.create_attribute(enums.AttributeType.NAME, "nbu-key-1-old"))
    say("rename", uid=first, name="nbu-key-1-old")
    say("delete_name", refused=refused(lambda: client.delete_attribute(
        unique_identifier=first, attribute_name="Name", attribute_index=0)))
    # Here a test changes the tape key through the mount (a description, the state);
    # KMIP must see it.
    say("seen_from_mount_before", uid=tape)
    say("seen_from_mount", uid=tape,
        attributes=attributes_of(client, tape, ["State", "x-description", "Name"]))
    client.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, registered)
    say("revoke", uid=registered)
    client.revoke(enums.RevocationReasonCode.KEY_COMPROMISE, first)
    say("revoke_compromised", uid=first)
    client.destroy(first)
    say("destroy", uid=first, state=attributes_of(client, first, ["State"])["State"])
    say("get_destroyed", refused=refused(lambda: client.get(first)))
    client.destroy(first)
    say("destroy_again", uid=first,
        refused=refused(lambda: client.get_attributes(first)))
    scratch = client.create(aes, 256, name="never-used")
    client.destroy(scratch)
    say("destroy_prelive", uid=scratch)
    say("done")


def main():
    global STEP_BY_STEP
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5696)
    p.add_argument("--cert", required=True, help="the client certificate (PEM)")
    p.add_argument("--key", required=True, help="its private key (PEM)")
    p.add_argument("--ca", required=True, help="the CA that signed the server's certificate")
    p.add_argument("--step-by-step", action="store_true")
    p.add_argument("command", nargs="*", default=["lifecycle"])
    a = p.parse_args()
    STEP_BY_STEP = a.step_by_step
    client = ProxyKmipClient(hostname=a.host, port=a.port, cert=a.cert, key=a.key, ca=a.ca,
                             config_file="/dev/null")
    try:
        client.open()
    except Exception as e:  # ssl.SSLError, ConnectionError, ...
        print(json.dumps({"step": "connect", "error": str(e)}), flush=True)
        return 2
    cmd, args = a.command[0], a.command[1:]
    try:
        if True:
            if cmd == "lifecycle":
                lifecycle(client)
            elif cmd == "create":
                kwargs = {"name": args[0]}
                if len(args) > 1:
                    say("create", uid=create_in_group(client, args[0], args[1], 256))
                else:
                    say("create", uid=client.create(enums.CryptographicAlgorithm.AES, 256,
                                                    **kwargs))
            elif cmd == "get":
                say("get", uid=args[0], sha256=sha256(client.get(args[0])))
            elif cmd in ("activate", "destroy"):
                getattr(client, cmd)(args[0])
                say(cmd, uid=args[0])
            elif cmd == "revoke":
                client.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, args[0])
                say(cmd, uid=args[0])
            elif cmd == "attributes":
                say(cmd, uid=args[0], attributes=attributes_of(client, args[0]))
            else:
                raise SystemExit("unknown command " + cmd)
    except (KmipOperationFailure, OperationFailure) as e:
        print(json.dumps({"step": cmd, "failed": e.reason.name, "message": e.message}),
              flush=True)
        return 1
    except Exception as e:  # a connection the server closed, a reply PyKMIP cannot read
        print(json.dumps({"step": cmd, "error": "%s: %s" % (type(e).__name__, e)}),
              flush=True)
        return 2
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
