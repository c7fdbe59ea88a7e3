"""The deployed server's webhook policy through the official Python MCP SDK: a server run
as its task runs (no AGENTBUS_WEBHOOKS_ANYWHERE) accepts subscriptions only to HTTPS on
public addresses.

  webhook_policy_client.py URL TOKEN

Exits 0 when every check passed; prints each failed check.
"""
import asyncio
import sys

from python_client import call, check, failures, kind
from small_client import session


async def body(s):
    err, out, text = await call(s, "rules_put", {"name": "policy", "pattern": {"priority": ["error"]}})
    check(not err, f"a rule to subscribe to ({text})")
    err, out, text = await call(s, "subscriptions_list", {})
    before = out["subscriptions"] if not err else None
    for url, why in [
        ("http://127.0.0.1:9/hook", "must use https"),
        ("http://hooks.example.com/hook", "must use https"),
        ("https://127.0.0.1/hook", "public"),
        ("https://169.254.169.254/latest/meta-data/", "public"),
        ("https://10.0.0.5/hook", "public"),
        ("https://[::ffff:127.0.0.1]/hook", "public"),
        ("https://[64:ff9b::a9fe:a9fe]/hook", "public"),
    ]:
        err, out, text = await call(s, "subscriptions_create", {"rule": "policy", "url": url})
        check(err and kind(text) == "tool_error" and why in text,
              f"{url} is refused as a tool error saying {why!r} ({kind(text)}: {text})")
    err, out, text = await call(s, "subscriptions_list", {})
    check(not err and [x["subscription_id"] for x in out["subscriptions"]] == [x["subscription_id"] for x in before],
          f"nothing was subscribed ({out})")
    # The tenant is left as it was found.
    err, out, text = await call(s, "rules_delete", {"name": "policy"})
    check(not err, f"the rule is deleted again ({text})")


if __name__ == "__main__":
    asyncio.run(session(sys.argv[1], sys.argv[2], body))
    sys.exit(1 if failures else 0)
