"""The moto server the tests use, with the few APIs agentbus calls that moto 5.2 lacks.

This is test setup, not product: the product calls the real AWS APIs, and the emulator is
taught to answer them here.

- Budgets DescribeSubscribersForNotification: moto answers 500.
- Budgets UpdateBudget: moto does not implement it.
- DynamoDB conditional writes: moto checks the condition and then writes without a lock, so
  concurrent compare-and-set requests can both succeed; DynamoDB makes each conditional write
  atomic. The writes are serialised here.
- EventBridge -> CloudWatch Logs delivery: moto stamps the log event with a float number of
  milliseconds, which no SDK parses as the integer the API defines.
- S3 GetBucketVersioning: moto 5.2 wraps the answer in <GetBucketVersioningResponse>; the
  API's root element is <VersioningConfiguration> (botocore does not check the root, the Rust
  SDK does).

Run as: python tests/moto/server.py -H 127.0.0.1 -p PORT (same arguments as moto_server).
"""
import functools
import json
import threading
import time

import moto.dynamodb.models as dynamodb_models
import moto.events.models as events_models
from moto.budgets.exceptions import NotFoundException
from moto.budgets.responses import BudgetsResponse
from moto.s3.responses import S3Response
from xml.sax.saxutils import escape
from moto.server import main


def _budget(self, account_id, name):
    budget = self.backend.budgets[account_id].get(name)
    if budget is None:
        raise NotFoundException(f"Unable to get budget: {name} - the budget doesn't exist.")
    return budget


def describe_subscribers_for_notification(self):
    budget = _budget(self, self._get_param("AccountId"), self._get_param("BudgetName"))
    wanted = self._get_param("Notification")
    for n in budget.notifications:
        if all(n.details.get(k) == v for k, v in wanted.items()):
            return json.dumps({"Subscribers": n.subscribers})
    raise NotFoundException("Unable to find the notification")


def update_budget(self):
    new = self._get_param("NewBudget")
    budget = _budget(self, self._get_param("AccountId"), new["BudgetName"])
    kept = {k: budget.budget[k] for k in ("TimePeriod",) if k in budget.budget}
    budget.budget = {**new, **kept, "LastUpdatedTime": time.time()}
    return json.dumps({})


_dynamodb_writes = threading.RLock()


def _serialised(write):
    @functools.wraps(write)
    def wrapper(*args, **kwargs):
        with _dynamodb_writes:
            return write(*args, **kwargs)

    return wrapper


for _name in ("put_item", "update_item", "delete_item", "transact_write_items"):
    setattr(dynamodb_models.DynamoDBBackend, _name, _serialised(getattr(dynamodb_models.DynamoDBBackend, _name)))

_unix_time_millis = events_models.unix_time_millis
events_models.unix_time_millis = lambda *args: int(_unix_time_millis(*args))

def get_bucket_versioning(self):
    status = self.backend.get_bucket_versioning(self.bucket_name)
    self.data["Action"] = "GetBucketVersioning"
    inner = f"<Status>{escape(status)}</Status>" if status else ""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{inner}</VersioningConfiguration>'
    )
    return 200, {"Content-Type": "application/xml"}, body


S3Response.get_bucket_versioning = get_bucket_versioning
BudgetsResponse.describe_subscribers_for_notification = describe_subscribers_for_notification
BudgetsResponse.update_budget = update_budget

if __name__ == "__main__":
    main()
