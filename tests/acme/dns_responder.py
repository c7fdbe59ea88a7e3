#!/usr/bin/env python3
"""An authoritative DNS server on 127.0.0.1 (UDP and TCP) that answers from Route 53 in the
test emulator, so that an ACME CA's DNS-01 check (pebble's -dnsserver) reads exactly the
records the product wrote.

This is test setup, not product: on AWS, Route 53's name servers answer for a public hosted
zone; moto stores the records and serves no DNS.

    dns_responder.py [--endpoint http://127.0.0.1:MOTO_PORT] [--port 0]

The endpoint defaults to AWS_ENDPOINT_URL; credentials and region come from the environment.
It prints `listening on 127.0.0.1:PORT` once it serves, then logs one line per query on
stderr.

Each query is answered from Route 53 as it is at that moment (nothing is cached): the public
hosted zone whose name is the longest suffix of the query name holds the answer (several zones
of that name are read together); names outside every public zone are REFUSED. A name without
record sets is NXDOMAIN unless a record set lies below it (an empty non-terminal: NOERROR, no
answer, as are names with record sets of other types). A, AAAA, CNAME (followed within the
hosted zones), NS, PTR, MX, SRV, TXT, SPF, CAA and SOA values are served as stored; TXT values
are Route 53's quoted character-strings (RFC 1035 5.1, `\\ddd` octal escapes). Not served:
alias records, wildcards, EDNS (answers over 512 bytes on UDP are truncated, TC set).
"""
import argparse
import ast
import os
import socket
import socketserver
import struct
import sys
import threading

import boto3
import botocore.config

TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28,
         "SRV": 33, "SPF": 99, "CAA": 257}
TYPE_NAMES = {v: k for k, v in TYPES.items()}
ANY = 255
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
RCODE_NAMES = ["NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED"]
UDP_LIMIT = 512  # RFC 1035 4.2.1, without EDNS
CNAME_HOPS = 8


class BadValue(Exception):
    """A stored value this server cannot put on the wire (answered SERVFAIL)."""


# Names are tuples of lower-cased labels (bytes), the root is ().

def name_from_text(text):
    """A name in Route 53's text form: dots between labels, `\\ddd` (octal) and `\\c` escapes."""
    labels, label, i = [], bytearray(), 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            if text[i + 1:i + 4].isdigit() and len(text[i + 1:i + 4]) == 3:
                label.append(int(text[i + 1:i + 4], 8) & 0xFF)
                i += 4
                continue
            if i + 1 >= len(text):
                raise BadValue(f"name ends in a backslash: {text!r}")
            label += text[i + 1].encode()
            i += 2
            continue
        if c == ".":
            if label:
                labels.append(bytes(label).lower())
            label = bytearray()
        else:
            label += c.encode()
        i += 1
    if label:
        labels.append(bytes(label).lower())
    return tuple(labels)


def name_to_text(name):
    return ".".join(l.decode("ascii", "backslashreplace") for l in name) + "."


def encode_name(name):
    out = bytearray()
    for label in name:
        if not 0 < len(label) < 64:
            raise BadValue(f"label of {len(label)} bytes in {name_to_text(name)}")
        out.append(len(label))
        out += label
    return bytes(out) + b"\0"


def read_name(msg, off):
    """The name at `off` of a DNS message (compression pointers followed), and the offset
    after it."""
    labels, end, jumps = [], None, 0
    while True:
        if off >= len(msg):
            raise ValueError("name runs past the message")
        n = msg[off]
        if n & 0xC0 == 0xC0:
            if off + 1 >= len(msg) or jumps > 20:
                raise ValueError("bad compression pointer")
            if end is None:
                end = off + 2
            off = ((n & 0x3F) << 8) | msg[off + 1]
            jumps += 1
        elif n & 0xC0:
            raise ValueError("unknown label type")
        elif n == 0:
            return tuple(labels), (end if end is not None else off + 1)
        else:
            labels.append(bytes(msg[off + 1:off + 1 + n]).lower())
            off += 1 + n


def character_strings(value):
    """Route 53's TXT value: one or more character-strings, each quoted ("a b" "c") or a bare
    word, with `\\"`, `\\\\` and `\\ddd` (octal) escapes."""
    strings, i, n = [], 0, len(value)
    while i < n:
        if value[i] in " \t":
            i += 1
            continue
        quoted = value[i] == '"'
        if quoted:
            i += 1
        buf = bytearray()
        closed = not quoted
        while i < n:
            c = value[i]
            if quoted and c == '"':
                i += 1
                closed = True
                break
            if not quoted and c in " \t":
                break
            if c == "\\":
                digits = value[i + 1:i + 4]
                if len(digits) == 3 and digits.isdigit():
                    code = int(digits, 8)
                    if code > 0xFF:
                        raise BadValue(f"escape \\{digits} in {value!r}")
                    buf.append(code)
                    i += 4
                    continue
                if i + 1 >= n:
                    raise BadValue(f"value ends in a backslash: {value!r}")
                i += 1
                c = value[i]
            buf += c.encode()
            i += 1
        if not closed:
            raise BadValue(f"unterminated quote in {value!r}")
        if len(buf) > 255:
            # Route 53 refuses such a value (CharacterStringTooLong); moto stores it.
            raise BadValue(f"character-string over 255 bytes in {value!r}")
        strings.append(bytes(buf))
    return strings


def rdata(rtype, value):
    """The wire RDATA of one stored value of type `rtype`."""
    f = value.split()
    try:
        if rtype == "A":
            return socket.inet_pton(socket.AF_INET, value.strip())
        if rtype == "AAAA":
            return socket.inet_pton(socket.AF_INET6, value.strip())
        if rtype in ("CNAME", "NS", "PTR"):
            return encode_name(name_from_text(value.strip()))
        if rtype == "MX":
            return struct.pack("!H", int(f[0])) + encode_name(name_from_text(f[1]))
        if rtype == "SRV":
            return struct.pack("!HHH", int(f[0]), int(f[1]), int(f[2])) + encode_name(name_from_text(f[3]))
        if rtype in ("TXT", "SPF"):
            return b"".join(bytes([len(s)]) + s for s in character_strings(value))
        if rtype == "CAA":
            flags, tag, rest = value.strip().split(None, 2)
            tag = tag.encode()
            return bytes([int(flags), len(tag)]) + tag + b"".join(character_strings(rest))
        if rtype == "SOA":
            if value.startswith("{"):  # moto 5.2 stores its zones' SOA as "{'Value': '...'}"
                f = ast.literal_eval(value)["Value"].split()
            return (encode_name(name_from_text(f[0])) + encode_name(name_from_text(f[1]))
                    + struct.pack("!5I", *(int(x) for x in f[2:7])))
    except (ValueError, IndexError, KeyError, TypeError, SyntaxError, OSError, struct.error) as e:
        raise BadValue(f"{rtype} value {value!r}: {e}") from None
    raise BadValue(f"type {rtype} is not served")


class Route53:
    """Reads the answer to each query from Route 53, at the time of the query."""

    def __init__(self, endpoint):
        self.client = boto3.client(
            "route53",
            endpoint_url=endpoint,
            region_name=os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1",
            # An ACME CA's DNS client waits about 2 s (miekg/dns's default) for an answer.
            config=botocore.config.Config(connect_timeout=1, read_timeout=2,
                                          retries={"max_attempts": 2, "mode": "standard"}),
        )

    def zones_for(self, name):
        """The ids of the public hosted zones with the longest name that `name` ends in, and
        that zone name; (None, None) if none."""
        best, ids = None, []
        for page in self.client.get_paginator("list_hosted_zones").paginate():
            for z in page["HostedZones"]:
                if z.get("Config", {}).get("PrivateZone"):
                    continue
                zname = name_from_text(z["Name"])
                if name[len(name) - len(zname):] != zname or len(zname) > len(name):
                    continue
                if best is None or len(zname) > len(best):
                    best, ids = zname, [z["Id"]]
                elif zname == best:
                    ids.append(z["Id"])
        return ids, best

    def record_sets(self, zone_ids, name):
        """The record sets named `name` in those zones, and whether the name exists (has
        record sets, or some below it).

        The whole zone is read, not from StartRecordName on: moto orders and skips record
        sets by comparing their names as stored, case-sensitively, so a start at the query
        name could miss what Route 53 (case-insensitive) returns. Test zones are small."""
        found, exists = [], False
        for zone_id in zone_ids:
            pages = self.client.get_paginator("list_resource_record_sets").paginate(HostedZoneId=zone_id)
            for page in pages:
                for rrset in page["ResourceRecordSets"]:
                    rname = name_from_text(rrset["Name"])
                    if rname == name:
                        found.append(rrset)
                        exists = True
                    elif len(rname) > len(name) and rname[len(rname) - len(name):] == name:
                        exists = True
        return found, exists

    def resolve(self, name, qtype):
        """(rcode, [(owner, type code, ttl, rdata)]) for a query."""
        answers, seen = [], set()
        for _ in range(CNAME_HOPS):
            zone_ids, zone = self.zones_for(name)
            if not zone_ids:
                # Outside every hosted zone: refused, but after a CNAME the answer so far.
                return (NOERROR, answers) if answers else (REFUSED, [])
            rrsets, exists = self.record_sets(zone_ids, name)
            if not exists:
                return NXDOMAIN, answers
            cnames = [r for r in rrsets if r["Type"] == "CNAME" and r.get("ResourceRecords")]
            if cnames and qtype not in (TYPES["CNAME"], ANY):
                value = cnames[0]["ResourceRecords"][0]["Value"]
                answers.append((name, TYPES["CNAME"], cnames[0].get("TTL", 0), rdata("CNAME", value)))
                seen.add(name)
                name = name_from_text(value)
                if name in seen:
                    return SERVFAIL, []
                continue
            for r in rrsets:
                code = TYPES.get(r["Type"])
                if code is None or qtype not in (code, ANY):
                    continue
                # Alias records have no ResourceRecords, and are not served.
                for rr in r.get("ResourceRecords", []):
                    answers.append((name, code, r.get("TTL", 0), rdata(r["Type"], rr["Value"])))
            return NOERROR, answers
        return SERVFAIL, []


def answer(store, query, limit, log):
    """The response to one query message (None: nothing to answer)."""
    if len(query) < 12:
        return None
    qid, flags, qdcount = struct.unpack("!HHH", query[:6])
    if flags & 0x8000:  # a response, not a query
        return None
    base = 0x8000 | (flags & 0x7800) | 0x0400 | (flags & 0x0100)  # QR, opcode, AA, RD

    def reply(rcode, question=b"", count=0, records=b"", tc=0):
        flags = base & ~0x0400 if rcode in (FORMERR, NOTIMP, REFUSED) else base  # AA: in a zone we serve
        return struct.pack("!6H", qid, flags | tc | rcode, 1 if question else 0, count, 0, 0) + question + records

    if (flags >> 11) & 0xF != 0:
        return reply(NOTIMP)
    if qdcount != 1:
        return reply(FORMERR)
    try:
        qname, off = read_name(query, 12)
        qtype, qclass = struct.unpack("!HH", query[off:off + 4])
    except (ValueError, struct.error):
        return reply(FORMERR)
    question = query[12:off + 4]
    shown = f"{name_to_text(qname)} {TYPE_NAMES.get(qtype, qtype)}"
    if qclass not in (1, 255):
        log(f"{shown} class {qclass}: REFUSED")
        return reply(REFUSED, question)
    try:
        rcode, answers = store.resolve(qname, qtype)
    except BadValue as e:
        log(f"{shown}: SERVFAIL ({e})")
        return reply(SERVFAIL, question)
    except Exception as e:  # Route 53 unreachable or erring: the query fails, the server stays.
        log(f"{shown}: SERVFAIL (Route 53: {type(e).__name__}: {e})")
        return reply(SERVFAIL, question)
    records = bytearray()
    for owner, code, ttl, data in answers:
        # The query name as a pointer to the question (offset 12), keeping its case.
        records += b"\xc0\x0c" if owner == qname else encode_name(owner)
        records += struct.pack("!HHIH", code, 1, ttl, len(data)) + data
    log(f"{shown}: {RCODE_NAMES[rcode]} {len(answers)} answer(s)")
    msg = reply(rcode, question, len(answers), bytes(records))
    if limit and len(msg) > limit:
        return reply(rcode, question, tc=0x0200)
    return msg


class Responder:
    """UDP and TCP servers on one port of 127.0.0.1, answering from `store`."""

    def __init__(self, store, port=0, log=None):
        out = log or sys.stderr
        lock = threading.Lock()

        def write(line):
            with lock:
                out.write(line + "\n")
                out.flush()

        class Udp(socketserver.BaseRequestHandler):
            def handle(self):
                data, sock = self.request
                msg = answer(store, data, UDP_LIMIT, write)
                if msg:
                    sock.sendto(msg, self.client_address)

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self):
                self.request.settimeout(10)
                f = self.request.makefile("rb")
                while True:
                    head = f.read(2)
                    if len(head) < 2:
                        return
                    (length,) = struct.unpack("!H", head)
                    data = f.read(length)
                    if len(data) < length:
                        return
                    msg = answer(store, data, None, write)
                    if msg is None:
                        return
                    self.request.sendall(struct.pack("!H", len(msg)) + msg)

        class UdpServer(socketserver.ThreadingUDPServer):
            daemon_threads = True

        class TcpServer(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        # Both on one port: with port 0, the TCP server takes the port the UDP one got, and
        # another pair is tried if that port is taken for TCP.
        for attempt in range(20):
            udp = UdpServer(("127.0.0.1", port), Udp)
            try:
                tcp = TcpServer(("127.0.0.1", udp.server_address[1]), Tcp)
                break
            except OSError:
                udp.server_close()
                if port or attempt == 19:
                    raise
        self.udp, self.tcp, self.port = udp, tcp, udp.server_address[1]

    def start(self):
        """Serves in daemon threads."""
        for server in (self.udp, self.tcp):
            threading.Thread(target=server.serve_forever, daemon=True).start()

    def shutdown(self):
        for server in (self.udp, self.tcp):
            server.shutdown()
            server.server_close()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoint", default=os.environ.get("AWS_ENDPOINT_URL"),
                   help="Route 53's endpoint (default: $AWS_ENDPOINT_URL)")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    args = p.parse_args()
    if not args.endpoint:
        p.error("no endpoint: give --endpoint or set AWS_ENDPOINT_URL")
    responder = Responder(Route53(args.endpoint), args.port)
    responder.start()
    print(f"listening on 127.0.0.1:{responder.port}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
