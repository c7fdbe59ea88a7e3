#!/usr/bin/env python3
"""An ACME CA for the tests: pebble (letsencrypt/pebble, Debian's `pebble` package), whose
DNS-01 checks read the test emulator's Route 53 through dns_responder.py beside this file.

This is test setup, not product: in production the CA is Let's Encrypt, which reads the
records from Route 53's name servers.

    acme_fixture.py --endpoint http://127.0.0.1:MOTO_PORT --dir DIR [--pebble PATH]
                    [--cert-validity SECONDS]

In DIR (created if missing) it writes a throwaway CA and the certificate pebble serves its
API with (localhost, 127.0.0.1), pebble's config and two logs. Everything listens on
127.0.0.1 only. Once pebble answers its directory it prints one JSON line on stdout, and
nothing more there:

    {"directory": "https://127.0.0.1:P/dir", "ca_file": "DIR/api-ca.pem",
     "roots_url": "https://127.0.0.1:M/roots/0", "root_file": "DIR/issuing-root.pem",
     "dns": "127.0.0.1:D", "pebble_log": "DIR/pebble.log", "dns_log": "DIR/dns.log"}

`ca_file` signs the API's certificate (a client trusts the API with it, e.g.
SSL_CERT_FILE); `root_file` is the root pebble issues under (fetched from `roots_url`, new at
every start). It runs until pebble exits (with pebble's status), it is signalled, or its
parent process is gone; pebble is stopped with it, and killed by the kernel if this process
is killed (PR_SET_PDEATHSIG).

pebble runs with real validation (PEBBLE_VA_ALWAYS_VALID=0), without its random sleeps before
validating (PEBBLE_VA_NOSLEEP=1), rejecting no valid nonce (PEBBLE_WFE_NONCEREJECT=0), never
reusing a valid authorization (PEBBLE_AUTHZREUSE=0: each order is validated again), with one
root and one intermediate. Its HTTP-01 and TLS-ALPN-01 ports are free ports nothing listens
on: only DNS-01 can succeed.
"""
import argparse
import ctypes
import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

sys.dont_write_bytecode = True  # no __pycache__ in the work tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dns_responder  # noqa: E402

PR_SET_PDEATHSIG = 1
START_TIMEOUT = 30


def write_api_certificates(d):
    """A CA and, signed by it, the certificate for localhost and 127.0.0.1 that pebble serves
    its ACME and management APIs with. Returns the paths (CA, certificate, key)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agentbus test pebble API CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = tuple(os.path.join(d, f) for f in ("api-ca.pem", "api-cert.pem", "api-key.pem"))
    with open(paths[0], "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths[1], "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(paths[2], "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return paths


def free_ports(n):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def die_with_parent(parent):
    """Run in pebble's process before it execs: killed when this process goes."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork

    def set_pdeathsig():
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # gone before prctl took effect
            os._exit(1)
    return set_pdeathsig


def start_pebble(pebble, d, cert, key, dns_port, validity, ssl_ctx):
    """Starts pebble on free ports; returns (process, ACME port, management port) once its
    directory answers. Tried again on other ports if pebble could not listen."""
    log_path = os.path.join(d, "pebble.log")
    env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0", PEBBLE_AUTHZREUSE="0",
               PEBBLE_VA_ALWAYS_VALID="0", PEBBLE_ALTERNATE_ROOTS="0", PEBBLE_CHAIN_LENGTH="1")
    env.pop("PEBBLE_VA_SLEEPTIME", None)
    for attempt in range(5):
        acme_port, mgmt_port, http_port, tls_port = free_ports(4)
        config = {"pebble": {
            "listenAddress": f"127.0.0.1:{acme_port}",
            "managementListenAddress": f"127.0.0.1:{mgmt_port}",
            "certificate": cert,
            "privateKey": key,
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }}
        if validity:
            config["pebble"]["certificateValidityPeriod"] = validity
        config_path = os.path.join(d, "pebble-config.json")
        with open(config_path, "w") as f:
            json.dump(config, f, indent=2)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [pebble, "-config", config_path, "-dnsserver", f"127.0.0.1:{dns_port}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                preexec_fn=die_with_parent(os.getpid()),
            )
        deadline = time.monotonic() + START_TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                for port, path in ((acme_port, "/dir"), (mgmt_port, "/roots/0")):
                    urllib.request.urlopen(f"https://127.0.0.1:{port}{path}", context=ssl_ctx, timeout=2).read()
                return proc, acme_port, mgmt_port
            except OSError:
                time.sleep(0.1)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            raise SystemExit(f"pebble did not answer within {START_TIMEOUT}s; see {log_path}")
        with open(log_path, errors="replace") as f:
            tail = f.read()[-2000:]
        if "address already in use" not in tail:
            raise SystemExit(f"pebble exited with status {proc.returncode}:\n{tail}")
    raise SystemExit(f"pebble found no free ports; see {log_path}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoint", default=os.environ.get("AWS_ENDPOINT_URL"),
                   help="Route 53's endpoint, the test emulator (default: $AWS_ENDPOINT_URL)")
    p.add_argument("--dir", required=True, help="directory for the certificates, config and logs")
    p.add_argument("--pebble", default="pebble", help="pebble's binary (default: pebble on PATH)")
    p.add_argument("--cert-validity", type=int, default=0,
                   help="lifetime in seconds of the certificates pebble issues (default: pebble's, 5 years)")
    args = p.parse_args()
    if not args.endpoint:
        p.error("no endpoint: give --endpoint or set AWS_ENDPOINT_URL")
    pebble = shutil.which(args.pebble)
    if not pebble:
        p.error(f"{args.pebble} not found (apt-get install pebble)")
    # The emulator takes any credentials.
    for k, v in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        os.environ.setdefault(k, v)
    d = os.path.abspath(args.dir)
    os.makedirs(d, exist_ok=True)

    ca_file, cert, key = write_api_certificates(d)
    ssl_ctx = ssl.create_default_context(cafile=ca_file)
    dns_log_path = os.path.join(d, "dns.log")
    dns_log = open(dns_log_path, "a", buffering=1)
    # Bound now, served once pebble runs: pebble is started while this process has one thread.
    responder = dns_responder.Responder(dns_responder.Route53(args.endpoint), 0, dns_log)

    parent = os.getppid()
    stopping = threading.Event()

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, on_signal)

    proc = None
    try:
        proc, acme_port, mgmt_port = start_pebble(pebble, d, cert, key, responder.port,
                                                  args.cert_validity, ssl_ctx)
        responder.start()

        def watch_parent():
            while not stopping.wait(1):
                if os.getppid() != parent:
                    os.kill(os.getpid(), signal.SIGTERM)
                    return

        threading.Thread(target=watch_parent, daemon=True).start()

        roots_url = f"https://127.0.0.1:{mgmt_port}/roots/0"
        root_file = os.path.join(d, "issuing-root.pem")
        with urllib.request.urlopen(roots_url, context=ssl_ctx, timeout=10) as r, open(root_file, "wb") as f:
            f.write(r.read())
        print(json.dumps({
            "directory": f"https://127.0.0.1:{acme_port}/dir",
            "ca_file": ca_file,
            "roots_url": roots_url,
            "root_file": root_file,
            "dns": f"127.0.0.1:{responder.port}",
            "pebble_log": os.path.join(d, "pebble.log"),
            "dns_log": dns_log_path,
        }), flush=True)
        status = proc.wait()
        print(f"acme_fixture: pebble exited with status {status}; see {d}/pebble.log", file=sys.stderr)
        sys.exit(status if status > 0 else 128 - status if status < 0 else 1)
    finally:
        stopping.set()
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    main()
