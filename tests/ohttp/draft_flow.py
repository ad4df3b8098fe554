#!/usr/bin/env python3
"""The draft's mailbox flow through Oblivious HTTP, as an independent client would run it.

Written from RFC 9458 (Oblivious HTTP), RFC 9292 (Binary HTTP) and RFC 9540 (the key
configuration at /.well-known/ohttp-gateway); HPKE (RFC 9180) is pyhpke's, the rest is
here. It shares no code with tigress.

    draft_flow.py --gateway http://HOST:PORT [--relay http://HOST:PORT --target PEER_ID]

The key configuration always comes from the gateway itself. Without --relay the
encapsulated requests go to the gateway; with it they go to the relay's
/v1/ohttp-relay/PEER_ID. Prints one line per step ("create 200", ...) and exits 1 on the
first unexpected answer.
"""

import argparse
import base64
import datetime
import json
import os
import sys
import urllib.error
import urllib.request
import uuid

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from pyhpke import AEADId, CipherSuite, KDFId, KEMId

KEMS = {0x0020: (KEMId.DHKEM_X25519_HKDF_SHA256, 32)}
KDFS = {0x0001: KDFId.HKDF_SHA256}
AEADS = {
    0x0001: (AEADId.AES128_GCM, AESGCM, 16, 12),
    0x0003: (AEADId.CHACHA20_POLY1305, ChaCha20Poly1305, 32, 12),
}


# --- RFC 9000 §16 variable-length integers, as RFC 9292 uses them -------------------


def varint(n):
    if n < 1 << 6:
        return bytes([n])
    if n < 1 << 14:
        return (n | 0x4000).to_bytes(2, "big")
    if n < 1 << 30:
        return (n | 0x80000000).to_bytes(4, "big")
    return (n | 0xC000000000000000).to_bytes(8, "big")


def read_varint(buf, i):
    first = buf[i]
    length = 1 << (first >> 6)
    value = first & 0x3F
    for b in buf[i + 1 : i + length]:
        value = (value << 8) | b
    return value, i + length


def with_length(b):
    return varint(len(b)) + b


def read_with_length(buf, i):
    n, i = read_varint(buf, i)
    return buf[i : i + n], i + n


# --- RFC 9292 known-length messages --------------------------------------------------


def encode_request(method, authority, path, headers, content):
    out = varint(0)  # known-length request
    for part in (method, b"https", authority, path):
        out += with_length(part)
    fields = b"".join(with_length(k.lower()) + with_length(v) for k, v in headers)
    out += with_length(fields)
    out += with_length(content)
    out += varint(0)  # no trailers
    return out


def decode_response(buf):
    framing, i = read_varint(buf, 0)
    if framing != 1:
        raise ValueError(f"not a known-length response: framing {framing}")
    while True:
        status, i = read_varint(buf, i)
        fields, i = read_with_length(buf, i)
        if not 100 <= status < 200:
            break
    headers = {}
    j = 0
    while j < len(fields):
        name, j = read_with_length(fields, j)
        value, j = read_with_length(fields, j)
        headers[name.decode().lower()] = value.decode("latin-1")
    content = b""
    if i < len(buf):
        content, i = read_with_length(buf, i)
    return status, headers, content


# --- RFC 9540 key configurations, RFC 9458 encapsulation -----------------------------


def parse_key_configs(data):
    configs = []
    i = 0
    while i < len(data):
        n = int.from_bytes(data[i : i + 2], "big")
        c = data[i + 2 : i + 2 + n]
        i += 2 + n
        key_id = c[0]
        kem_id = int.from_bytes(c[1:3], "big")
        if kem_id not in KEMS:
            continue
        npk = KEMS[kem_id][1]
        public_key = c[3 : 3 + npk]
        suites_len = int.from_bytes(c[3 + npk : 5 + npk], "big")
        suites = c[5 + npk : 5 + npk + suites_len]
        for k in range(0, len(suites), 4):
            kdf_id = int.from_bytes(suites[k : k + 2], "big")
            aead_id = int.from_bytes(suites[k + 2 : k + 4], "big")
            if kdf_id in KDFS and aead_id in AEADS:
                configs.append((key_id, kem_id, public_key, kdf_id, aead_id))
    if not configs:
        raise ValueError("no usable key configuration")
    return configs[0]


def hkdf_extract(salt, ikm):
    h = hmac.HMAC(salt, hashes.SHA256())
    h.update(ikm)
    return h.finalize()


def hkdf_expand(prk, info, length):
    out, block, counter = b"", b"", 1
    while len(out) < length:
        h = hmac.HMAC(prk, hashes.SHA256())
        h.update(block + info + bytes([counter]))
        block = h.finalize()
        out += block
        counter += 1
    return out[:length]


class Encapsulated:
    """One request sealed to the gateway's key, and how to open its response."""

    def __init__(self, config, request):
        key_id, kem_id, public_key, kdf_id, aead_id = config
        self.aead = AEADS[aead_id]
        suite = CipherSuite.new(KEMS[kem_id][0], KDFS[kdf_id], self.aead[0])
        header = bytes([key_id]) + kem_id.to_bytes(2, "big") + kdf_id.to_bytes(2, "big")
        header += aead_id.to_bytes(2, "big")
        info = b"message/bhttp request\x00" + header
        pk = suite.kem.deserialize_public_key(public_key)
        self.enc, self.context = suite.create_sender_context(pk, info=info)
        self.body = header + self.enc + self.context.seal(request)

    def open(self, response):
        _, cipher, nk, nn = self.aead
        size = max(nn, nk)
        secret = self.context.export(b"message/bhttp response", size)
        nonce, ct = response[:size], response[size:]
        prk = hkdf_extract(self.enc + nonce, secret)
        key = hkdf_expand(prk, b"key", nk)
        iv = hkdf_expand(prk, b"nonce", nn)
        return cipher(key).decrypt(iv, ct, b"")


def post(url, content_type, body):
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, r.headers.get("Content-Type"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read()


class Client:
    def __init__(self, gateway, relay, target):
        with urllib.request.urlopen(gateway + "/.well-known/ohttp-gateway", timeout=30) as r:
            if r.headers.get("Content-Type") != "application/ohttp-keys":
                raise ValueError("the key configuration has the wrong media type")
            self.config = parse_key_configs(r.read())
        self.url = gateway + "/.well-known/ohttp-gateway"
        if relay:
            self.url = f"{relay}/v1/ohttp-relay/{target}"
        self.authority = gateway.split("://", 1)[1].encode()

    def request(self, method, path, headers, body=b""):
        inner = encode_request(method.encode(), self.authority, path.encode(), headers, body)
        sealed = Encapsulated(self.config, inner)
        status, content_type, answer = post(self.url, "message/ohttp-req", sealed.body)
        if status != 200 or content_type != "message/ohttp-res":
            raise RuntimeError(f"outer answer {status} {content_type}: {answer[:200]!r}")
        return decode_response(sealed.open(answer))


def main():
    args = argparse.ArgumentParser()
    args.add_argument("--gateway", required=True)
    args.add_argument("--relay")
    args.add_argument("--target")
    opts = args.parse_args()
    client = Client(opts.gateway, opts.relay, opts.target)
    initiator, recipient = str(uuid.uuid4()), str(uuid.uuid4())
    first = base64.b64encode(b"first payload " + os.urandom(8)).decode()
    update = base64.b64encode(b"the recipient's update " + os.urandom(8)).decode()
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=2)
    expiration = later.strftime("%Y-%m-%dT%H:%M:%SZ")

    def step(name, want, method, path, claim, body=None):
        headers = [
            (b"mailbox-device-claim", claim.encode()),
            (b"mailbox-request-id", str(uuid.uuid4()).encode()),
        ]
        content = b""
        if body is not None:
            headers.append((b"content-type", b"application/json"))
            content = json.dumps(body).encode()
        status, _, answer = client.request(method, path, headers, content)
        print(f"{name} {status}", flush=True)
        if status != want:
            print(f"expected {want}: {answer[:300]!r}", file=sys.stderr)
            sys.exit(1)
        return json.loads(answer) if answer else None

    created = step(
        "create",
        200,
        "POST",
        "/v1/m",
        initiator,
        {
            "displayInformation": {
                "title": "Hotel Pass",
                "description": "Room 12",
                "imageURL": "https://example.com/i.png",
            },
            "payload": {"type": "AEAD_AES_128_GCM", "data": first},
            "mailboxConfiguration": {"accessRights": "RWD", "expiration": expiration},
        },
    )
    link = created["urlLink"]
    path = link[link.index("/v1/m/") :]
    read = step("read", 200, "POST", path, recipient)
    if read["payload"]["data"] != first:
        sys.exit("the read returned another payload")
    step("update", 200, "PUT", path, recipient, {"payload": {"type": "AEAD_AES_128_GCM", "data": update}})
    read = step("read-update", 200, "POST", path, initiator)
    if read["payload"]["data"] != update:
        sys.exit("the initiator did not read the update")
    step("delete", 200, "DELETE", path, initiator)
    step("read-deleted", 410, "POST", path, recipient)


if __name__ == "__main__":
    main()
