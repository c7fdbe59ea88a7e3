#!/usr/bin/env python3
"""An HTTP proxy in front of the test emulator that makes it fail as AWS sometimes does:
throttling errors, 500s, slow answers and dropped connections on a chosen share of calls;
and a hold, which stops calls from going on after the Nth so that a test can kill the
client at a known point.

    fault_proxy.py --upstream 127.0.0.1:5000 [--listen 127.0.0.1:0]

It prints the port it listens on as its first line, then serves until it is stopped. Only
127.0.0.1 is accepted as the listening and upstream address.

Faults are set at run time by the test, never forwarded:

    POST /__faults/config  {"seed": 7, "throttle": 0.05, "error": 0.03, "slow": 0.03,
                            "slow_ms": 1500, "drop_before": 0.02, "drop_after": 0.02,
                            "max_faults_per_call": 2, "lose_first_answer": "Create|Put",
                            "hold_at": null}
    GET  /__faults/state   {"calls": N, "held": H, "injected": {"throttle": n, ...},
                            "log": [[call number, operation, fault], ...]}

Each AWS call is numbered as it arrives. Call i's fault is drawn from a generator seeded with
(seed, i), so a seed gives the same faults to the same call numbers. The faults, each with
its probability:

- throttle: answered at once with the service's own throttling error, in the service's
  protocol (JSON, query XML, EC2's XML, REST XML, RPC v2 CBOR); never reaches the emulator.
- error: answered at once with a 500 InternalFailure; never reaches the emulator.
- slow: reaches the emulator `slow_ms` later.
- drop_before: the connection is closed before the call reaches the emulator.
- drop_after: the call reaches the emulator and is carried out; its answer is lost, the
  connection closed. The client cannot tell whether it happened (AWS's worst case).

With `lose_first_answer` = a regular expression, every call whose operation it matches
(`re.search`) is carried out and its first answer lost, so the SDK sends it again: each
change is made twice, as it can be on AWS.

A call (one SDK invocation, however many attempts it takes) gets at most
`max_faults_per_call` faults (2 unless set), fewer than the SDK's attempts, so that every
fault must be survived by a retry.

With `hold_at` = n, calls numbered n and later wait, unanswered and not forwarded, until the
configuration changes; when it does, they are dropped (their client was meant to be dead by
then). `held` counts the calls waiting.
"""

import argparse
import asyncio
import json
import random
import re
import sys

import cbor2


def address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if host != "127.0.0.1":
        raise argparse.ArgumentTypeError(f"{text}: only 127.0.0.1 is allowed")
    return host, int(port)


FAULTS = ["throttle", "error", "slow", "drop_before", "drop_after"]


class Faults:
    def __init__(self) -> None:
        self.config: dict = {"seed": 0}
        self.calls = 0
        self.held = 0
        self.injected = {f: 0 for f in FAULTS}
        # Every injected fault: [call number, AWS operation, fault].
        self.log: list = []
        # Faults injected per SDK call (its invocation id), across its attempts.
        self.faulted: dict[str, int] = {}
        self.changed = asyncio.Event()

    def set(self, config: dict) -> None:
        unknown = set(config) - set(FAULTS) - {
            "seed", "slow_ms", "hold_at", "max_faults_per_call", "lose_first_answer"}
        if unknown:
            raise ValueError(f"unknown settings: {sorted(unknown)}")
        self.config = config
        self.changed.set()
        self.changed = asyncio.Event()

    def draw(self, number: int) -> str | None:
        """The fault of call `number` (None: it passes untouched)."""
        roll = random.Random(f"{self.config.get('seed', 0)}:{number}").random()
        edge = 0.0
        for fault in FAULTS:
            edge += float(self.config.get(fault) or 0)
            if roll < edge:
                return fault
        return None

    def state(self) -> dict:
        return {"calls": self.calls, "held": self.held, "injected": self.injected, "log": self.log}


class Request:
    def __init__(self, head: bytes, body: bytes) -> None:
        self.head = head
        self.body = body
        lines = head.split(b"\r\n")
        self.line = lines[0].decode(errors="replace")
        self.headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name:
                self.headers[name.strip().lower().decode()] = value.strip().decode(errors="replace")

    @property
    def operation(self) -> str:
        """The AWS operation: the JSON protocols' target, the query protocol's Action, the
        RPC v2 CBOR path's last part; else the method and path (S3)."""
        if target := self.headers.get("x-amz-target"):
            return target
        if m := re.search(rb"(?:^|&)Action=(\w+)", self.body):
            return m.group(1).decode()
        if m := re.match(r"/service/\w+/operation/(\w+)", self.path):
            return m.group(1)
        return f"{self.method} {self.path.split('?')[0]}"

    @property
    def method(self) -> str:
        return self.line.split(" ", 1)[0]

    @property
    def path(self) -> str:
        parts = self.line.split(" ")
        return parts[1] if len(parts) > 1 else "/"


async def read_body(reader, headers: dict) -> bytes:
    """An HTTP/1.1 message body as its bytes on the wire (chunked bodies stay chunked)."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        out = bytearray()
        while True:
            size_line = await reader.readuntil(b"\r\n")
            out += size_line
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                # Trailers, then the empty line.
                while True:
                    line = await reader.readuntil(b"\r\n")
                    out += line
                    if line == b"\r\n":
                        return bytes(out)
            out += await reader.readexactly(size + 2)
    length = int(headers.get("content-length", "0") or 0)
    return await reader.readexactly(length) if length else b""


async def read_request(reader) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    req = Request(head, b"")
    req.body = await read_body(reader, req.headers)
    return req


async def read_response(reader, method: str) -> tuple[bytes, bool]:
    """One response's bytes, and whether the upstream closes after it."""
    head = await reader.readuntil(b"\r\n\r\n")
    resp = Request(head, b"")
    status = int(resp.line.split(" ")[1])
    closes = resp.headers.get("connection", "").lower() == "close" or resp.line.startswith("HTTP/1.0")
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return head, closes
    if "content-length" in resp.headers or "chunked" in resp.headers.get("transfer-encoding", "").lower():
        return head + await read_body(reader, resp.headers), closes
    return head + await reader.read(), True


def answer(status: int, reason: str, headers: dict, body: bytes) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}"]
    headers = {**headers, "Content-Length": str(len(body)), "x-amzn-RequestId": "fault-proxy"}
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def refusal(req: Request, throttled: bool) -> bytes:
    """A throttling error or a 500 in the protocol the call speaks."""
    h = req.headers
    message = "Rate exceeded" if throttled else "We encountered an internal error. Please try again."
    if h.get("smithy-protocol") == "rpc-v2-cbor":
        code = "ThrottlingException" if throttled else "InternalFailure"
        body = cbor2.dumps({"__type": code, "message": message})
        return answer(400 if throttled else 500, "Error", {
            "Content-Type": "application/cbor", "smithy-protocol": "rpc-v2-cbor"}, body)
    if "x-amz-target" in h:
        code = "ThrottlingException" if throttled else "InternalFailure"
        body = json.dumps({"__type": code, "message": message}).encode()
        return answer(400 if throttled else 500, "Error", {
            "Content-Type": h.get("content-type", "application/x-amz-json-1.1"),
            "x-amzn-ErrorType": code}, body)
    if re.search(rb"(?:^|&)Action=", req.body):
        ec2 = b"Version=2016-11-15" in req.body
        if ec2:
            code = "RequestLimitExceeded" if throttled else "InternalError"
            body = (f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message>"
                    "</Error></Errors><RequestID>fault-proxy</RequestID></Response>")
            return answer(503 if throttled else 500, "Error", {"Content-Type": "text/xml"}, body.encode())
        code = "Throttling" if throttled else "InternalFailure"
        body = (f"<ErrorResponse><Error><Type>{'Sender' if throttled else 'Receiver'}</Type>"
                f"<Code>{code}</Code><Message>{message}</Message></Error>"
                "<RequestId>fault-proxy</RequestId></ErrorResponse>")
        return answer(400 if throttled else 500, "Error", {"Content-Type": "text/xml"}, body.encode())
    # REST protocols: S3's XML (the others the product calls speak JSON or query).
    code = "SlowDown" if throttled else "InternalError"
    body = f"<Error><Code>{code}</Code><Message>{message}</Message><RequestId>fault-proxy</RequestId></Error>"
    return answer(503 if throttled else 500, "Error", {"Content-Type": "application/xml"}, body.encode())


async def control(req: Request, faults: Faults) -> bytes:
    if req.method == "POST" and req.path == "/__faults/config":
        try:
            faults.set(json.loads(req.body or b"{}"))
        except (ValueError, TypeError) as e:
            return answer(400, "Bad Request", {"Content-Type": "text/plain"}, str(e).encode())
    elif not (req.method == "GET" and req.path == "/__faults/state"):
        return answer(404, "Not Found", {"Content-Type": "text/plain"}, b"no such control")
    return answer(200, "OK", {"Content-Type": "application/json"}, json.dumps(faults.state()).encode())


async def serve(reader, writer, upstream, faults: Faults) -> None:
    up = None
    try:
        while (req := await read_request(reader)) is not None:
            if req.path.startswith("/__faults/"):
                writer.write(await control(req, faults))
                await writer.drain()
                if req.headers.get("connection", "").lower() == "close":
                    return
                continue
            faults.calls += 1
            number = faults.calls
            hold_at = faults.config.get("hold_at")
            if hold_at is not None and number >= hold_at:
                faults.held += 1
                try:
                    await faults.changed.wait()
                finally:
                    faults.held -= 1
                return
            # The SDK names each call and counts its attempts (amz-sdk-invocation-id,
            # amz-sdk-request: attempt=N); a call is failed at most `max_faults_per_call`
            # times, so that faults test the retries without outlasting them. A request
            # without that header (a download from a pre-signed URL) is named by its method
            # and path, so its retries count together too.
            call = req.headers.get("amz-sdk-invocation-id") or f"{req.method} {req.path}"
            fault = faults.draw(number)
            lose = faults.config.get("lose_first_answer")
            if lose and call not in faults.faulted and re.search(lose, req.operation):
                fault = "drop_after"
            if fault and fault != "slow":
                if faults.faulted.get(call, 0) >= int(faults.config.get("max_faults_per_call", 2)):
                    fault = None
                else:
                    faults.faulted[call] = faults.faulted.get(call, 0) + 1
            if fault:
                faults.injected[fault] += 1
                faults.log.append([number, req.operation, fault])
            if fault in ("throttle", "error"):
                writer.write(refusal(req, fault == "throttle"))
                await writer.drain()
                continue
            if fault == "drop_before":
                return
            if fault == "slow":
                await asyncio.sleep(float(faults.config.get("slow_ms", 1000)) / 1000)
            if up is None:
                up = await asyncio.open_connection(*upstream)
            up[1].write(req.head + req.body)
            await up[1].drain()
            response, closes = await read_response(up[0], req.method)
            if closes:
                up[1].close()
                up = None
            if fault == "drop_after":
                return
            writer.write(response)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
        pass
    finally:
        if up is not None:
            up[1].close()
        writer.close()


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--upstream", type=address, required=True)
    p.add_argument("--listen", type=address, default=("127.0.0.1", 0))
    args = p.parse_args()
    faults = Faults()
    server = await asyncio.start_server(
        lambda r, w: serve(r, w, args.upstream, faults), *args.listen, limit=1 << 24)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
