#!/usr/bin/env python3
"""The floods of the abuse suite, at full size, against a running node's public port.

Attackers and honest users leave from different loopback addresses (127.66.0.0/24 is the
attacker's network, 127.66.0.3 an honest neighbour in it, 127.77.0.2 a host elsewhere),
as they would come from different hosts on the internet. Prints one line per scenario.

    python3 tests/abuse/floods.py HOST:PORT NODE_PID

Standard library only. Needs a node whose budgets exempt nothing (the default).
"""

import http.client
import json
import os
import resource
import socket
import statistics
import sys
import threading
import time
import uuid

ATTACKER = "127.66.0.2"
NEIGHBOUR = "127.66.0.3"
OUTSIDER = "127.77.0.2"
INITIATOR = "0f8fad5b-d9cb-469f-a165-70867728950e"
RECIPIENT = "7c9e6679-7425-40de-944b-e07fc1f90ae7"


def node_usage(pid):
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) // 1024
    return fds, rss


def request(src, addr, method, path, headers=None, body=b"", timeout=150):
    host, port = addr.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout, source_address=(src, 0))
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return r.status, data
    finally:
        conn.close()


def timed(fn):
    t = time.monotonic()
    out = fn()
    return out, (time.monotonic() - t) * 1000


def create_body():
    exp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 86400))
    return json.dumps({
        "displayInformation": {"title": "Pass", "description": "A pass", "imageURL": "https://example.com/i"},
        "payload": {"type": "AEAD_AES_128_GCM", "data": "RkRFQy4uLjk4NzY1NDMyMQ=="},
        "notificationToken": {"type": "com.apple.apns", "tokenData": "APNS...1234"},
        "mailboxConfiguration": {"accessRights": "RWD", "expiration": exp},
    }).encode()


def mailbox(src, addr):
    status, data = request(src, addr, "POST", "/v1/m", {
        "Mailbox-Device-Claim": INITIATOR, "Mailbox-Request-ID": str(uuid.uuid4()),
        "Content-Type": "application/json"}, create_body())
    if status not in (200, 201):
        return None, status
    link = json.loads(data)["urlLink"]
    path = link[link.index("/v1/m/"):]
    request(src, addr, "POST", path, {"Mailbox-Device-Claim": RECIPIENT})
    return path, status


def slowloris(addr, pid, n=3000, hold=30):
    host, port = addr.split(":")
    socks, refused = [], 0
    for _ in range(n):
        s = socket.socket()
        try:
            s.bind((ATTACKER, 0))
            s.connect((host, int(port)))
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            socks.append(s)
        except OSError:
            refused += 1
            s.close()
    peak = node_usage(pid)
    lat = []
    start = time.monotonic()
    while time.monotonic() - start < hold:
        for s in socks:
            try:
                s.sendall(b"X-Slow: 1\r\n")
            except OSError:
                pass
        for src in (NEIGHBOUR, OUTSIDER):
            (status, _), ms = timed(lambda: request(src, addr, "GET", "/health", timeout=10))
            assert status == 200
            lat.append(ms)
        peak = max(peak, node_usage(pid))
        time.sleep(1)
    open_now = 0
    for s in socks:
        s.settimeout(0.01)
        try:
            if s.recv(1) == b"":
                continue
        except socket.timeout:
            open_now += 1
        except OSError:
            continue
    for s in socks:
        s.close()
    print(f"slowloris connections={n} open_after_{hold}s={open_now} node_fds_peak={peak[0]} "
          f"node_rss_peak_mb={peak[1]} health_p50_ms={statistics.median(lat):.1f} "
          f"health_max_ms={max(lat):.1f}")


def long_polls(addr, pid, n=300, honest=20):
    paths = []
    for _ in range(n // 8 + 1):
        path, status = mailbox(ATTACKER, addr)
        if path:
            paths.append(path)
    results = {"waiting": 0, "refused": 0}
    lock = threading.Lock()

    def poll(path):
        try:
            status, _ = request(ATTACKER, addr, "POST", path + "?wait=100",
                                {"Mailbox-Device-Claim": INITIATOR}, timeout=120)
            key = "refused" if status == 429 else "waiting"
        except OSError:
            key = "refused"
        with lock:
            results[key] += 1

    threads = [threading.Thread(target=poll, args=(paths[i % len(paths)],), daemon=True)
               for i in range(n)]
    for t in threads:
        t.start()
    time.sleep(3)
    ok, lat = 0, []
    for _ in range(honest):
        (path, status), ms = timed(lambda: mailbox(OUTSIDER, addr))
        lat.append(ms)
        if path:
            status, _ = request(OUTSIDER, addr, "PUT", path, {
                "Mailbox-Device-Claim": RECIPIENT, "Mailbox-Request-ID": str(uuid.uuid4()),
                "Content-Type": "application/json"},
                json.dumps({"payload": {"type": "AEAD_AES_128_GCM", "data": "QkJC"}}).encode())
            ok += status == 200
    neighbour, _ = mailbox(NEIGHBOUR, addr)
    with lock:
        refused = results["refused"]
    fds, rss = node_usage(pid)
    print(f"long_polls attacker_mailboxes={len(paths)} polls={n} refused={refused} "
          f"still_waiting={n - refused} honest_writes_ok={ok}/{honest} "
          f"honest_create_p50_ms={statistics.median(lat):.1f} neighbour_create="
          f"{'ok' if neighbour else 'refused'} node_fds={fds} node_rss_mb={rss}")


def random_ids(addr, n=1000):
    status_counts = {}
    start = time.monotonic()
    for _ in range(n):
        status, _ = request(ATTACKER, addr, "POST", f"/v1/m/{uuid.uuid4()}",
                            {"Mailbox-Device-Claim": RECIPIENT})
        status_counts[status] = status_counts.get(status, 0) + 1
    rate = n / (time.monotonic() - start)
    print(f"random_ids requests={n} per_sec={rate:.0f} statuses={status_counts}")


def main():
    addr, pid = sys.argv[1], int(sys.argv[2])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 10000), hard))
    slowloris(addr, pid)
    long_polls(addr, pid)
    random_ids(addr)


if __name__ == "__main__":
    main()
