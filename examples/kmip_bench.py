#!/usr/bin/env python3
"""The same PyKMIP client (ProxyKmipClient), the same workload, against the kmsfs KMIP server
and against PyKMIP's own server (pykmip-server), both on loopback, in one run: the median
time per operation and the ratio. Run as root (kmsfs mounts a file system):

    python3 examples/kmip_bench.py --kmsfs target/release/kmsfs [--rounds 50] [--hot 200]

It makes its own certificates (openssl), keystore and PyKMIP database in a temporary
directory, starts both servers, and stops them at the end. The workload, per round: create,
activate, get, revoke, destroy one AES-256 key; then a hot get (the same active key, again
and again); then create+activate (both calls, timed together); and Discover Versions, which
asks no work of a server: the floor the client, TLS and loopback set. One connection per server,
kept open, as backup software does. Results (a markdown table) go to stdout.
"""

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from kmip.core import enums
from kmip.pie.client import ProxyKmipClient


def openssl(cwd, *args):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def certificates(d):
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl(d, "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=bench CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for name, subject, ext in [
        ("server", "/CN=127.0.0.1",
         "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"),
        ("client", "/CN=bench", "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n"),
    ]:
        openssl(d, "req", *ec, "-keyout", name + ".key", "-out", name + ".csr", "-subj", subject)
        with open(os.path.join(d, name + ".ext"), "w") as f:
            f.write(ext)
        openssl(d, "x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", name + ".pem", "-days", "2", "-extfile", name + ".ext")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what):
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit("%s exited with %s" % (what, proc.returncode))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("%s does not listen on %d" % (what, port))


def start_kmsfs(binary, d, port):
    mnt = os.path.join(d, "mnt")
    proc = subprocess.Popen(
        [binary, "mount", "--init", "--data-dir", os.path.join(d, "data"), mnt,
         "--kmip-listen", "127.0.0.1:%d" % port,
         "--kmip-cert", os.path.join(d, "server.pem"),
         "--kmip-key", os.path.join(d, "server.key"),
         "--kmip-client-ca", os.path.join(d, "ca.pem")],
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "kmsfs.log"), "w"))
    wait_port(port, proc, "kmsfs mount")
    return proc


def start_pykmip(d, port):
    conf = os.path.join(d, "pykmip-server.conf")
    policies = os.path.join(d, "policies")
    os.mkdir(policies)
    with open(conf, "w") as f:
        f.write("[server]\nhostname=127.0.0.1\nport=%d\n" % port)
        f.write("certificate_path=%s/server.pem\nkey_path=%s/server.key\n" % (d, d))
        f.write("ca_path=%s/ca.pem\nauth_suite=TLS1.2\npolicy_path=%s\n" % (d, policies))
        f.write("enable_tls_client_auth=True\nlogging_level=WARNING\n")
        f.write("database_path=%s/pykmip.db\n" % d)
    server = shutil.which("pykmip-server") or os.path.join(os.path.dirname(sys.executable),
                                                           "pykmip-server")
    proc = subprocess.Popen([server, "-f", conf, "-l", os.path.join(d, "pykmip.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc, "pykmip-server")
    time.sleep(1)  # it listens before it serves
    return proc


def timed(samples, name, fn):
    t = time.perf_counter()
    out = fn()
    samples.setdefault(name, []).append(time.perf_counter() - t)
    return out


def workload(client, rounds, hot, tag):
    """Names are unique per call: kmsfs keeps a destroyed (terminated) key's name."""
    aes = enums.CryptographicAlgorithm.AES
    s = {}
    reason = enums.RevocationReasonCode.CESSATION_OF_OPERATION
    for i in range(rounds):
        uid = timed(s, "create", lambda: client.create(aes, 256, name="%s-%d" % (tag, i)))
        timed(s, "activate", lambda: client.activate(uid))
        timed(s, "get", lambda: client.get(uid))
        timed(s, "revoke", lambda: client.revoke(reason, uid))
        timed(s, "destroy", lambda: client.destroy(uid))
    hot_uid = client.create(aes, 256, name="%s-hot" % tag)
    client.activate(hot_uid)
    for _ in range(hot):
        timed(s, "hot get", lambda: client.get(hot_uid))
    # The floor: an operation with no server work to speak of (the client's encoding and
    # decoding, TLS, loopback).
    for _ in range(hot):
        timed(s, "discover versions", lambda: client.proxy.discover_versions())
    for i in range(rounds):
        def both():
            u = client.create(aes, 256, name="%s-pair-%d" % (tag, i))
            client.activate(u)
        timed(s, "create+activate", both)
    return s


def run(port, d, rounds, hot):
    client = ProxyKmipClient(hostname="127.0.0.1", port=port,
                             cert=os.path.join(d, "client.pem"),
                             key=os.path.join(d, "client.key"),
                             ca=os.path.join(d, "ca.pem"), config_file="/dev/null")
    client.open()
    try:
        workload(client, 3, 3, "warm")  # warm-up: connections, caches, the first group
        return workload(client, rounds, hot, "bench")
    finally:
        client.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kmsfs", required=True, help="the kmsfs binary")
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--hot", type=int, default=200)
    a = p.parse_args()
    d = tempfile.mkdtemp(prefix="kmip-bench-")
    certificates(d)
    kport, pport = free_port(), free_port()
    kmsfs = start_kmsfs(os.path.abspath(a.kmsfs), d, kport)
    pykmip = start_pykmip(d, pport)
    try:
        results = {"kmsfs": run(kport, d, a.rounds, a.hot),
                   "PyKMIP": run(pport, d, a.rounds, a.hot)}
    finally:
        kmsfs.send_signal(signal.SIGTERM)
        pykmip.terminate()
        kmsfs.wait(timeout=30)
        pykmip.wait(timeout=30)
    print("%d rounds, %d hot gets, one connection per server, medians:\n" % (a.rounds, a.hot))
    med = {who: {op: statistics.median(v) * 1000 for op, v in r.items()}
           for who, r in results.items()}
    floor = {who: med[who]["discover versions"] for who in med}
    print("| operation | kmsfs | PyKMIP server | ratio | kmsfs less its floor "
          "| PyKMIP less its floor | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for op in ["create", "activate", "get", "revoke", "destroy", "hot get", "create+activate",
               "discover versions"]:
        k, y = med["kmsfs"][op], med["PyKMIP"][op]
        row = "| %s | %.2f ms | %.2f ms | %.1fx |" % (op, k, y, y / k)
        if op != "discover versions":
            trips = 2 if op == "create+activate" else 1  # round trips, each with its floor
            kf, yf = k - trips * floor["kmsfs"], y - trips * floor["PyKMIP"]
            ratio = "%.1fx" % (yf / kf) if kf > 0.005 else "-"
            row += " %.2f ms | %.2f ms | %s |" % (kf, yf, ratio)
        else:
            row += " (the floor) | (the floor) | |"
        print(row)
    shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
