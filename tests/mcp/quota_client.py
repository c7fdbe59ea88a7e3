"""The quotas through the official Python MCP SDK: the daily ones against a server started
with `--quota-kv-kib-per-day 3 --quota-events-per-day 2`, the entries a tenant keeps against
one started with `--quota-kv-entries 2`.

  quota_client.py URL TOKEN_TENANT_A TOKEN_TENANT_B
  quota_client.py entries URL TOKEN_TENANT_A TOKEN_TENANT_B
  quota_client.py stored URL TOKEN_TENANT_A TOKEN_TENANT_B   (`up small --quota-stored-mib 1`)

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


async def entries_a(s):
    # Two entries kept: a third key is refused, the two can still be written, and a deleted
    # one makes room.
    for key in ("one", "two"):
        err, out, text = await call(s, "kv_set", {"key": key, "value": "v"})
        check(not err, f"entry {key} fits ({text})")
    err, out, text = await call(s, "kv_set", {"key": "three", "value": "v"})
    check(err and kind(text) == "tool_error" and "keeps 2 KV entries, its limit is 2" in text
          and "--quota-kv-entries" in text,
          f"a third key is refused, saying why and how to change it ({kind(text)}: {text})")
    err, out, _ = await call(s, "kv_get", {"key": "three"})
    check(not err and out.get("found") is False, f"the refused key was not written ({out})")
    err, out, text = await call(s, "kv_set", {"key": "one", "value": "again"})
    check(not err and out.get("version") == 2, f"a kept key is written again ({text})")
    err, out, text = await call(s, "kv_delete", {"key": "two"})
    check(not err and out.get("deleted") is True, f"a key is deleted ({text})")
    err, out, text = await call(s, "kv_set", {"key": "three", "value": "v"})
    check(not err, f"the deleted key's room takes a new one ({text})")


async def entries_b(s):
    err, out, text = await call(s, "kv_set", {"key": "one", "value": "v"})
    check(not err, f"another tenant keeps its own entries ({text})")


async def stored_a(s):
    # 1 MiB of files: 600 KiB fit, 600 KiB more do not; a deletion makes room at once.
    chunk = "x" * (600 * 1024)
    err, out, text = await call(s, "artifacts_put", {"key": "one.txt", "content": chunk})
    check(not err, f"600 KiB fit ({text[:200]})")
    err, out, text = await call(s, "artifacts_put", {"key": "two.txt", "content": chunk})
    check(err and kind(text) == "tool_error" and "past its limit of 1 MiB" in text
          and "--quota-stored-mib" in text,
          f"600 KiB more are refused, saying why and how to change it ({kind(text)}: {text[:300]})")
    err, out, text = await call(s, "artifacts_get", {"key": "two.txt"})
    check(not err and out.get("found") is False, f"the refused artifact was not stored ({text[:200]})")
    err, out, text = await call(s, "artifacts_delete", {"key": "one.txt"})
    check(not err, f"an artifact is deleted ({text[:200]})")
    err, out, text = await call(s, "artifacts_put", {"key": "two.txt", "content": chunk})
    check(not err, f"its room takes the next one ({text[:200]})")


async def stored_b(s):
    err, out, text = await call(s, "artifacts_put", {"key": "one.txt", "content": "y" * (600 * 1024)})
    check(not err, f"another tenant keeps its own files ({text[:200]})")


async def main(url, a, b):
    await session(url, a, tenant_a)
    await session(url, b, tenant_b)


async def entries(url, a, b):
    await session(url, a, entries_a)
    await session(url, b, entries_b)


if __name__ == "__main__":
    if sys.argv[1] == "entries":
        asyncio.run(entries(*sys.argv[2:5]))
    elif sys.argv[1] == "stored":
        async def stored(url, a, b):
            await session(url, a, stored_a)
            await session(url, b, stored_b)
        asyncio.run(stored(*sys.argv[2:5]))
    else:
        asyncio.run(main(*sys.argv[1:4]))
    sys.exit(1 if failures else 0)
