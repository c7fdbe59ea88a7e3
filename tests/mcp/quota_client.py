"""The daily quotas through the official Python MCP SDK, against a server started with
`--quota-kv-kib-per-day 3 --quota-events-per-day 2`.

  quota_client.py URL TOKEN_TENANT_A TOKEN_TENANT_B

Exits 0 when every check passed; prints each failed check.
"""
import asyncio
import sys

from python_client import call, check, failures, kind
from small_client import session


async def tenant_a(s):
    # 3 KiB a day: a 2 KiB write and a 1 KiB write fit, the next byte does not.
    err, out, text = await call(s, "kv_set", {"key": "a", "value": "x" * 2000})
    check(not err, f"the first 2 KiB fit ({text})")
    err, out, text = await call(s, "kv_set", {"key": "b", "value": "y"})
    check(not err, f"the third KiB fits ({text})")
    err, out, text = await call(s, "kv_set", {"key": "c", "value": "z"})
    check(err and kind(text) == "tool_error", f"a write past the quota is a tool error ({kind(text)}: {text})")
    check("3 of its 3 KiB of KV writes today" in text and "--quota-kv-kib-per-day" in text,
          f"the refusal says what was used, the limit and how to change it ({text})")
    err, out, _ = await call(s, "kv_get", {"key": "c"})
    check(not err and out.get("found") is False, f"the refused write wrote nothing ({out})")
    err, out, _ = await call(s, "kv_get", {"key": "a"})
    check(not err and out.get("found") is True, f"reads go on past the quota ({out})")
    for i in range(2):
        err, out, text = await call(s, "events_send", {"detail_type": "tick", "detail": {"i": i}})
        check(not err, f"event {i} fits ({text})")
    err, out, text = await call(s, "events_send", {"detail_type": "tick", "detail": {"i": 2}})
    check(err and kind(text) == "tool_error" and "2 of its 2 events today" in text,
          f"the third event is refused ({kind(text)}: {text})")


async def tenant_b(s):
    # Another tenant's quota is its own.
    err, out, text = await call(s, "kv_set", {"key": "a", "value": "x" * 3000})
    check(not err, f"tenant b writes its own 3 KiB ({text})")
    err, out, text = await call(s, "events_send", {"detail_type": "tick", "detail": {}})
    check(not err, f"tenant b publishes ({text})")


async def main(url, a, b):
    await session(url, a, tenant_a)
    await session(url, b, tenant_b)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
    sys.exit(1 if failures else 0)
