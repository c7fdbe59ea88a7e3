#!/usr/bin/env python3
"""A TCP proxy that makes a local AWS emulator answer like a region: every request waits a
fixed delay before it reaches the emulator.

    latency_proxy.py --upstream 127.0.0.1:5000 --delay-ms 50 [--listen 127.0.0.1:0] [--trace FILE]

It prints the port it listens on as its first line, then serves until it is stopped. The delay
is added once per request: the first bytes a client sends after the previous answer (or on a
new connection) wait, the rest of the request and the answer pass straight through. HTTP
keep-alive connections therefore pay it once per call, as they pay a round trip to AWS.
Only 127.0.0.1 is accepted as the listening and upstream address.
"""

import argparse
import asyncio
import re
import sys
import time


def address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if host != "127.0.0.1":
        raise argparse.ArgumentTypeError(f"{text}: only 127.0.0.1 is allowed")
    return host, int(port)


class Exchange:
    """The state of one client connection: whether its next bytes start a new request."""

    def __init__(self) -> None:
        self.new_request = True
        # A request whose operation is not traced yet: (start time, request line).
        self.untraced: tuple[float, str] | None = None


# Where a request names its operation: the JSON protocols' target header, the query
# protocol's Action parameter (in the body), the RPC v2 CBOR path; else the method and path.
NAMED = [
    re.compile(rb"^x-amz-target: *([\w.]+)", re.I | re.M),
    re.compile(rb"(?:^|[?&])Action=(\w+)", re.M),
    re.compile(rb"^POST /service/\w+/operation/(\w+)", re.M),
]
REQUEST_LINE = re.compile(rb"^(\w+) (/[^ ?]*)")


def operation(data: bytes) -> str | None:
    """The AWS operation these bytes of a request name, if they name one."""
    for pattern in NAMED:
        if m := pattern.search(data):
            return m.group(1).decode(errors="replace")
    return None


async def client_to_upstream(src, dst, delay, ex: Exchange, trace):
    try:
        while data := await src.read(65536):
            if trace:
                if ex.new_request:
                    line = REQUEST_LINE.match(data)
                    ex.untraced = (time.monotonic(), line.group(0).decode() if line else "?")
                if ex.untraced:
                    named = operation(data)
                    # The body (and its Action) may come after the headers; without a body,
                    # the request line is all there is.
                    if named or b"\r\n\r\n" in data and not data.endswith(b"\r\n\r\n"):
                        start, line = ex.untraced
                        print(f"{start:.3f} {named or line}", file=trace, flush=True)
                        ex.untraced = None
            if ex.new_request:
                ex.new_request = False
                await asyncio.sleep(delay)
            dst.write(data)
            await dst.drain()
    finally:
        dst.close()


async def upstream_to_client(src, dst, ex: Exchange):
    try:
        while data := await src.read(65536):
            ex.new_request = True
            dst.write(data)
            await dst.drain()
    finally:
        dst.close()


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--upstream", type=address, required=True)
    p.add_argument("--listen", type=address, default=("127.0.0.1", 0))
    p.add_argument("--delay-ms", type=float, required=True)
    p.add_argument("--trace", help="append one line per request here: its time and operation")
    args = p.parse_args()
    delay = args.delay_ms / 1000.0
    trace = open(args.trace, "a") if args.trace else None

    async def serve(reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection(*args.upstream)
        except OSError:
            writer.close()
            return
        ex = Exchange()
        await asyncio.gather(
            client_to_upstream(reader, up_writer, delay, ex, trace),
            upstream_to_client(up_reader, writer, ex),
            return_exceptions=True,
        )

    server = await asyncio.start_server(serve, *args.listen)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
