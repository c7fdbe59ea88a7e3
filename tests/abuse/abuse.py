"""A bounded abuse suite against a running `agentbus up small` (127.0.0.1 only), with the
official Python MCP SDK and plain sockets:

1. big values: 4 clients list a tenant's KV (200 entries of 300 KiB) at once, again and
   again; the server's resident memory grows by less than 64 MiB;
2. silent connections: 50 connections that never send a byte are all closed by the server
   within 40 s, and the server answers others meanwhile;
3. a dead webhook: tenant A's webhook accepts connections and never answers; tenant B's event
   is recorded within 5 s of being sent, and so is A's next one;
4. strict inputs: an unknown tool argument is an error that names it, nothing is written.

  abuse.py AGENTBUS_BINARY

Starts the server itself in a temporary data directory; prints what it measured; exits 0
when every check passed.
"""
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "mcp"))
from python_client import call, check, failures  # noqa: E402
from small_client import session  # noqa: E402

RSS_LIMIT_MIB = 64
SILENT = 50
SILENT_LIMIT_S = 40
EVENT_LIMIT_S = 5


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def start(binary, data_dir, port):
    p = subprocess.Popen(
        [binary, "up", "small", "--data-dir", data_dir, "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, "NO_COLOR": "1"},
    )
    token = None
    for line in p.stdout:
        m = re.search(r"admin token \(shown once; tenant default\): (\S+)", line)
        if m:
            token = m.group(1)
        if line.startswith("Ctrl-C stops it"):
            break
    threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                if b" 200 " in s.recv(100):
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("the server did not come up")
        time.sleep(0.1)
    return p, token


def token_for(binary, data_dir, tenant):
    out = subprocess.run(
        [binary, "token", "create", "--data-dir", data_dir, "--tenant", tenant, "--role", "admin", "--json"],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out)["token"]


async def big_values(url, token, pid):
    value = "v" * (300 * 1024)

    async def fill(s):
        for i in range(200):
            err, _, text = await call(s, "kv_set", {"key": f"big/{i:03}", "value": value})
            if err:
                check(False, f"kv_set big/{i:03}: {text}")
                return
    await session(url, token, fill)
    before = rss_kib(pid)
    peak = before
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_kib(pid))
            time.sleep(0.02)
    t = threading.Thread(target=sample)
    t.start()

    async def lister(s):
        for _ in range(5):
            err, out, text = await call(s, "kv_list", {"prefix": "big/", "limit": 1000})
            check(not err and len(out["entries"]) == 200, f"kv_list lists the 200 big entries ({text if err else len(out['entries'])})")
    await asyncio.gather(*(session(url, token, lister) for _ in range(4)))
    done.set()
    t.join()
    grew = (peak - before) / 1024
    print(f"  big values: RSS {before / 1024:.0f} MiB before, peak {peak / 1024:.0f} MiB while 4 clients listed 5 times each (+{grew:.1f} MiB)")
    check(grew < RSS_LIMIT_MIB, f"kv_list of big values grows RSS by less than {RSS_LIMIT_MIB} MiB (+{grew:.1f} MiB)")


def silent_connections(port):
    conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(SILENT)]
    opened = time.monotonic()
    # Meanwhile the server answers others.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        check(b" 200 " in s.recv(100), "the server answers while 50 connections say nothing")
    closed_at = []
    for c in conns:
        c.settimeout(max(0.1, SILENT_LIMIT_S - (time.monotonic() - opened)))
        try:
            data = c.recv(1)
            check(data in (b"", b"H"), f"a silent connection gets nothing but its close or a timeout answer ({data!r})")
            # An answer (408) may come before the close.
            while data:
                data = c.recv(4096)
            closed_at.append(time.monotonic() - opened)
        except socket.timeout:
            check(False, f"a silent connection was still open after {SILENT_LIMIT_S} s")
        except ConnectionResetError:
            closed_at.append(time.monotonic() - opened)
        finally:
            c.close()
    last = max(closed_at) if closed_at else float("inf")
    print(f"  silent connections: {len(closed_at)} of {SILENT} closed by the server, the last after {last:.1f} s")
    check(len(closed_at) == SILENT and last < SILENT_LIMIT_S, f"all {SILENT} silent connections closed within {SILENT_LIMIT_S} s")


def hanging_webhook():
    """Accepts connections and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    held = []

    def loop():
        while True:
            c, _ = srv.accept()
            held.append(c)
    threading.Thread(target=loop, daemon=True).start()
    return f"http://127.0.0.1:{srv.getsockname()[1]}/hook", held


async def dead_webhook(url, token_a, token_b):
    hook, held = hanging_webhook()

    async def subscribe(s):
        err, _, text = await call(s, "rules_put", {"name": "all", "pattern": {"source": [{"prefix": ""}]}})
        check(not err, f"rules_put ({text})")
        err, _, text = await call(s, "subscriptions_create", {"rule": "all", "url": hook})
        check(not err, f"subscriptions_create ({text})")
        err, _, text = await call(s, "events_send", {"detail_type": "stuck", "detail": {"n": 1}})
        check(not err, f"events_send ({text})")
    await session(url, token_a, subscribe)
    # Wait until the webhook was called: from now on it hangs.
    deadline = time.monotonic() + 10
    while not held and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    check(bool(held), "the hanging webhook was called")

    async def recorded(s, detail_type):
        sent = time.monotonic()
        err, _, text = await call(s, "events_send", {"detail_type": detail_type, "detail": {"n": 2}})
        check(not err, f"events_send ({text})")
        while True:
            err, out, _ = await call(s, "events_query", {"detail_type": detail_type})
            if not err and out["events"]:
                return time.monotonic() - sent
            if time.monotonic() - sent > EVENT_LIMIT_S:
                return None
            await asyncio.sleep(0.05)

    took = {}

    async def b(s):
        took["b"] = await recorded(s, "other-tenant")

    async def a(s):
        took["a"] = await recorded(s, "same-tenant-next")
    await session(url, token_b, b)
    await session(url, token_a, a)
    shown = {k: "never" if v is None else f"{v:.2f} s" for k, v in took.items()}
    print(f"  dead webhook: another tenant's event recorded after {shown['b']}, the same tenant's next after {shown['a']}")
    check(took["b"] is not None, f"another tenant's event is recorded within {EVENT_LIMIT_S} s while a webhook hangs")
    check(took["a"] is not None, f"the tenant's own next event is recorded within {EVENT_LIMIT_S} s too")


async def strict_inputs(url, token):
    async def body(s):
        err, _, text = await call(s, "kv_set", {"key": "strict", "value": "v", "ttl": 60})
        check(err and text.kind == "tool_error" and "ttl" in text, f"an unknown argument is refused by name ({text})")
        err, out, _ = await call(s, "kv_get", {"key": "strict"})
        check(not err and out["found"] is False, "nothing was written")
    await session(url, token, body)


def main(binary):
    data_dir = tempfile.mkdtemp(prefix="agentbus-abuse-")
    port = free_port()
    p, token_a = start(binary, data_dir, port)
    try:
        token_b = token_for(binary, data_dir, "tenant-b")
        url = f"http://127.0.0.1:{port}/mcp"
        asyncio.run(big_values(url, token_a, p.pid))
        silent_connections(port)
        asyncio.run(dead_webhook(url, token_a, token_b))
        asyncio.run(strict_inputs(url, token_a))
        check(p.poll() is None, "the server is still running")
    finally:
        p.terminate()
        p.wait(timeout=30)
        subprocess.run(["rm", "-rf", data_dir])
    print(f"abuse suite: {len(failures)} failed check(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main(sys.argv[1])
