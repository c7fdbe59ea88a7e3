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
- DynamoDB UpdateContinuousBackups right after a table becomes ACTIVE: AWS answers
  ContinuousBackupsUnavailableException ("Backups are being enabled for the table", see the
  UpdateContinuousBackups API reference, Errors) until the table's backups are set up; moto
  accepts at once. Refused here for PITR_SETTLE_SECONDS after the table's creation.
- IAM propagation: a role is not usable by other services for a few seconds after CreateRole
  ("changes that you make in IAM take time to become visible", IAM User Guide, Troubleshoot
  IAM: "Changes that I make are not always immediately visible"); ECS RegisterTaskDefinition
  then answers ClientException "Role is not valid". moto accepts at once. Refused here for
  IAM_SETTLE_SECONDS after the role's creation.
- SQS CreateQueue after DeleteQueue of the same name: AWS answers
  AWS.SimpleQueueService.QueueDeletedRecently for 60 seconds ("You must wait 60 seconds after
  deleting a queue before you can create another queue with the same name", CreateQueue API
  reference). moto accepts at once. Refused here for QUEUE_REUSE_SECONDS (shorter than AWS's
  60 s so the suite stays quick; the product waits for whatever AWS says).
- Application Auto Scaling: tags of scalable targets, PutScalingPolicy without a target,
  DeregisterScalableTarget deleting the target's policies, ObjectNotFoundException for what
  does not exist (see the comment above its patches).
- Budgets tags (CreateBudget's ResourceTags, TagResource, UntagResource, ListTagsForResource
  by the budget's ARN): moto ignores the first and lacks the others.
- Budgets DescribeBudget: AWS includes the budget's FilterExpression only when
  ShowFilterExpression is true (DescribeBudget API reference); moto always includes it.
- Step Functions StopExecution: AWS aborts the execution at once (status ABORTED, StopDate
  set; StopExecution API reference), also while a task waits for its task token; moto's
  interpreter leaves the waiting task until its timeout and then reports FAILED. Here the
  execution is ABORTED when stopped, and stays so.
- S3 GetBucketVersioning: moto 5.2 wraps the answer in <GetBucketVersioningResponse>; the
  API's root element is <VersioningConfiguration> (botocore does not check the root, the Rust
  SDK does).
- Step Functions SendTaskFailure: moto's handler drops the request's `cause`, so the
  TaskFailed event has none; AWS keeps it (SendTaskFailure API reference). Passed on here.
- Step Functions GetExecutionHistory: moto ignores `reverseOrder` and `maxResults` and returns
  every event oldest first; AWS returns at most `maxResults` events, newest first when asked,
  with a `nextToken` for the rest (GetExecutionHistory API reference). Done here.
- The Smithy RPC v2 CBOR protocol: the Rust SDK speaks it to CloudWatch (the service's model
  lists it first, before awsJson1_0 and awsQuery; "Smithy RPC v2 CBOR protocol", Smithy
  specification), and moto 5.2 does not. A CBOR request (`POST /service/{service}/operation/
  {operation}`, header `smithy-protocol: rpc-v2-cbor`) is decoded here and handed to moto as
  the same operation in the JSON protocol moto does speak; its answer is encoded back as CBOR,
  with timestamps as epoch-seconds (tag 1), numbers as the model's types and blobs as bytes,
  as the protocol defines them.
- Secrets Manager CreateSecret right after a delete without recovery: AWS answers
  InvalidRequestException while the deletion finishes; moto frees the name at once.
- ECS CreateService's deploymentConfiguration (moto drops it) and a new primary deployment
  for a new task definition on UpdateService (moto keeps the first one).
- ECS services that never become steady, or whose rollout the circuit breaker stops, by name
  (AGENTBUS_SHIM_NEVER_STEADY, AGENTBUS_SHIM_ROLLOUT_FAILS): moto has no containers to fail.
- CloudWatch Logs Embedded Metric Format: PutLogEvents with the header `x-amzn-logs-format:
  json/emf` makes CloudWatch extract the metrics each valid EMF document declares
  ("Specification: Embedded metric format", CloudWatch User Guide); moto stores the events
  only. Valid documents' metrics are put into moto's CloudWatch here, and an invalid one
  (or one sent without the header) yields none, as on AWS.
- ELB CreateLoadBalancer with subnets in fewer than two Availability Zones: AWS answers
  ValidationError; moto accepts it.
- ELB CreateLoadBalancer, CreateTargetGroup and CreateListener are idempotent on AWS (the same
  settings again return what exists); moto creates a second load balancer of the same name,
  refuses a second target group, and creates a second listener on the same port.
- CloudWatch Logs PutMetricFilter creates or updates the filter of that name in its log
  group; moto adds a second one.
- DynamoDB UpdateTable's SSESpecification switches the table's encryption; moto ignores it.
- CloudWatch Logs JSON filter patterns: moto matches every event for them; the equality form
  (`{ $.detail.tenant = "a" }`) is matched here, as CloudWatch Logs does.
- ECS's service-linked role: CreateCluster with capacity providers fails until
  AWSServiceRoleForECS exists; CreateServiceLinkedRole names it so and answers InvalidInput
  when it exists (moto: AWSServiceRoleForecs, EntityAlreadyExists).
- Step Functions service integrations: moto's interpreter calls its own server at
  `localhost:MOTO_PORT`, which may resolve to ::1; the tests talk to 127.0.0.1 only, so the
  interpreter's clients are pointed there.

- ECR GetDownloadUrlForLayer: moto does not implement it (nor keep the bytes of a completed
  layer upload). AWS answers a pre-signed URL for a blob of the repository that an image
  references, LayersNotFoundException for a digest the repository lacks and
  LayerInaccessibleException for one no image references (GetDownloadUrlForLayer API
  reference, Errors). Here the bytes of each completed upload are kept, and the URL points
  at this server (`/__ecr-blob/...`), which serves them without credentials, as a
  pre-signed URL does.

- IAM authorization of a role's requests: AWS checks GetRole, CreateRole and the rest against
  the role's ARN (`arn:aws:iam::ACCOUNT:role/NAME`, Service Authorization Reference, IAM,
  resource type `role`) whether or not the role exists yet; moto checks against the ARN only
  for an existing role and against `*` otherwise, so a policy scoped to the role's ARN could
  never create it. The same for SQS queues (by QueueName too, which moto does not read).
  Resolved to the ARN here, and CreateServiceLinkedRole to the role it makes
  (only matters when IAM is enforced).
- IAM signature checks of query-protocol requests: see RAW_FORM below.
- IAM authorization of Budgets: its actions are ViewBudget and ModifyBudget, not the
  operations' names moto checks (Service Authorization Reference, AWS Budgets). Mapped here,
  and CloudWatch's (moto takes the signing name, `monitoring`, for the service prefix).
- IAM authorization of S3 bucket requests: the actions AWS checks for HeadBucket, the public
  access block, default encryption and DeleteObjects (see the comment at ACTION_MAP below).

- RDS CreateDBCluster and CreateDBSubnetGroup with an existing name: AWS answers
  DBClusterAlreadyExistsFault and DBSubnetGroupAlreadyExists; moto replaces what exists.
- RDS states: AWS shows a cluster or an instance `creating` for minutes after its creation
  and, after a delete, `deleting` (still described) until it is gone; moto makes each
  `available` at once and forgets it on delete. Held here for RDS_SETTLE_SECONDS each way.
- X-Ray's trace destination (GetTraceSegmentDestination, UpdateTraceSegmentDestination) and
  CloudWatch's OTLP traces endpoint (POST /v1/traces): moto has neither (see the comment at
  XRAY_SETTLE_SECONDS below).

Run as: python tests/moto/server.py -H 127.0.0.1 -p PORT (same arguments as moto_server).
"""
import base64
import hmac
import importlib
import functools
import io
import json
import threading
import time

import botocore.session
import cbor2
import moto
from moto.moto_server.werkzeug_app import DomainDispatcherApplication

# The shims below patch moto's internals as they are in this release: another release may
# move what they patch without an error, and the tests would then check a different emulator.
MOTO_VERSION = "5.2.5"
if moto.__version__ != MOTO_VERSION:
    raise SystemExit(
        f"tests/moto/server.py patches moto {MOTO_VERSION}; this is moto {moto.__version__}: "
        f"pip install 'moto[server]=={MOTO_VERSION}'"
    )

import os
from datetime import datetime, timezone

import moto.dynamodb.models as dynamodb_models
import moto.rds.models as rds_models
from moto.rds.exceptions import RDSClientError
from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.exceptions import JsonRESTError
import moto.ecs.models as ecs_models
import moto.events.models as events_models
import moto.sqs.models as sqs_models
from moto.sqs.exceptions import QueueDoesNotExist, SQSException
from moto.sqs.responses import SQSResponse
from moto.ecs.exceptions import EcsClientException
from moto.budgets.exceptions import NotFoundException
from moto.budgets.responses import BudgetsResponse
from moto.s3.responses import S3Response
import moto.s3.responses as s3_responses
from xml.sax.saxutils import escape
from moto.server import main
from moto.iam.responses import IamResponse
from moto.iam.access_control import IAMRequestBase
from moto.iam.exceptions import NotFoundException as IamNotFound
from moto.core.responses import ActionResult, BaseResponse, EmptyResult
from moto.stepfunctions.responses import StepFunctionResponse
import moto.stepfunctions.parser.backend.execution as sfn_execution
import moto.stepfunctions.parser.asl.utils.boto_client as sfn_boto
from moto.stepfunctions.parser.api import ExecutionStatus


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

# Seconds after CreateTable during which point-in-time recovery cannot be turned on yet.
PITR_SETTLE_SECONDS = float(os.environ.get("AGENTBUS_SHIM_PITR_SECONDS", "1"))


class ContinuousBackupsUnavailableException(JsonRESTError):
    def __init__(self):
        super().__init__(
            "ContinuousBackupsUnavailableException",
            "Backups are being enabled for the table. Please retry later",
        )


_update_continuous_backups = dynamodb_models.DynamoDBBackend.update_continuous_backups


def update_continuous_backups(self, table_name, point_in_time_spec):
    table = self.tables.get(table_name)
    if table is not None and point_in_time_spec.get("PointInTimeRecoveryEnabled"):
        created = table.created_at
        if created.tzinfo is None:
            created = created.replace(tzinfo=timezone.utc)
        if (datetime.now(timezone.utc) - created).total_seconds() < PITR_SETTLE_SECONDS:
            raise ContinuousBackupsUnavailableException()
    return _update_continuous_backups(self, table_name, point_in_time_spec)


dynamodb_models.DynamoDBBackend.update_continuous_backups = update_continuous_backups

# Seconds after CreateRole during which ECS does not accept the role yet.
IAM_SETTLE_SECONDS = float(os.environ.get("AGENTBUS_SHIM_IAM_SECONDS", "1"))


def _young_role(backend, arn):
    if not arn:
        return False
    from moto.iam.models import iam_backends
    from moto.utilities.utils import get_partition

    try:
        role = iam_backends[backend.account_id][get_partition(backend.region_name)].get_role_by_arn(arn)
    except Exception:
        return False
    created = role.create_date
    if created.tzinfo is None:
        created = created.replace(tzinfo=timezone.utc)
    return (datetime.now(timezone.utc) - created).total_seconds() < IAM_SETTLE_SECONDS


_register_task_definition = ecs_models.EC2ContainerServiceBackend.register_task_definition


def register_task_definition(self, *args, **kwargs):
    for arn in (kwargs.get("task_role_arn"), kwargs.get("execution_role_arn")):
        if _young_role(self, arn):
            raise EcsClientException("Role is not valid")
    return _register_task_definition(self, *args, **kwargs)


ecs_models.EC2ContainerServiceBackend.register_task_definition = register_task_definition

# ECS's service-linked role. AWS names it AWSServiceRoleForECS (moto: AWSServiceRoleForecs),
# answers InvalidInput "has been taken" when it exists, and CreateCluster with capacity
# providers fails until it does ("Unable to assume the service linked role", ECS Developer
# Guide, "Using service-linked roles for Amazon ECS"; a fresh account has none until the
# console or CreateServiceLinkedRole makes it).
import moto.iam.models as iam_models
from moto.iam.exceptions import InvalidInput
from moto.ecs.exceptions import InvalidParameterException

_create_service_linked_role = iam_models.IAMBackend.create_service_linked_role


def create_service_linked_role(self, service_name, description, suffix):
    if service_name == "ecs.amazonaws.com" and not suffix:
        name = "AWSServiceRoleForECS"
        if name in [r.name for r in self.roles.values()]:
            raise InvalidInput(f"Service role name {name} has been taken in this account, please try a different suffix.")
        role = _create_service_linked_role(self, service_name, description, suffix)
        role.name = name
        return role
    return _create_service_linked_role(self, service_name, description, suffix)


iam_models.IAMBackend.create_service_linked_role = create_service_linked_role

_create_cluster = ecs_models.EC2ContainerServiceBackend.create_cluster


def create_cluster(self, cluster_name, tags=None, cluster_settings=None, configuration=None, capacity_providers=None, *args, **kwargs):
    from moto.utilities.utils import get_partition

    if capacity_providers:
        iam = iam_models.iam_backends[self.account_id][get_partition(self.region_name)]
        if "AWSServiceRoleForECS" not in [r.name for r in iam.roles.values()]:
            raise InvalidParameterException(
                "Unable to assume the service linked role. Please verify that the ECS service linked role exists."
            )
    return _create_cluster(self, cluster_name, tags, cluster_settings, configuration, capacity_providers, *args, **kwargs)


ecs_models.EC2ContainerServiceBackend.create_cluster = create_cluster

# ECS services' deployments. moto drops CreateService's deploymentConfiguration (the circuit
# breaker) and keeps a service's first deployment, of its first task definition, through every
# UpdateService; ECS keeps the configuration and starts a new primary deployment of the new
# revision ("Amazon ECS rolling update deployments", ECS Developer Guide).
import moto.ecs.responses as ecs_responses

_create_service_response = ecs_responses.EC2ContainerServiceResponse.create_service


def create_service_response(self):
    result = _create_service_response(self)
    config = self._get_param("deploymentConfiguration")
    if config:
        cluster = self._get_param("cluster", "default").split("/")[-1]
        name = self._get_param("serviceName")
        self.ecs_backend._get_service(cluster, name).deployment_configuration = config
    return result


ecs_responses.EC2ContainerServiceResponse.create_service = create_service_response

_update_service = ecs_models.EC2ContainerServiceBackend.update_service


def update_service(self, service_properties):
    new_revision = service_properties.get("task_definition")
    service = _update_service(self, service_properties)
    if new_revision and service.deployments:
        d = service.deployments[0]
        if d.get("taskDefinition") != service.task_definition:
            from moto.core.utils import utcnow
            from moto.moto_api._internal import mock_random

            d["id"] = f"ecs-svc/{mock_random.randint(0, 32**12)}"
            d["taskDefinition"] = service.task_definition
            d["createdAt"] = d["updatedAt"] = utcnow()
    return service


ecs_models.EC2ContainerServiceBackend.update_service = update_service

# ECS services that do not become steady, for the tests of the deploy's steady-state wait
# (moto runs no containers: MOTO_ECS_SERVICE_RUNNING makes every service steady at once).
# A service whose name matches AGENTBUS_SHIM_NEVER_STEADY keeps its tasks pending, its
# rollout IN_PROGRESS; one matching AGENTBUS_SHIM_ROLLOUT_FAILS has its rollout stopped by
# the circuit breaker (rolloutState FAILED with a reason), as ECS reports a revision whose
# tasks keep failing ("Amazon ECS deployment circuit breaker", ECS Developer Guide).
import re

_NEVER_STEADY = re.compile(os.environ.get("AGENTBUS_SHIM_NEVER_STEADY") or r"(?!)")
_ROLLOUT_FAILS = re.compile(os.environ.get("AGENTBUS_SHIM_ROLLOUT_FAILS") or r"(?!)")
_service_init = ecs_models.Service.__init__


def _unsteady(service):
    """Holds a matching service's tasks pending (moto's UpdateService would run them); with
    MOTO_ECS_SERVICE_RUNNING set, every other service runs as many tasks as it wants (moto
    reports that fixed number whatever the desired count, so a service of two would never be
    steady)."""
    if _NEVER_STEADY.search(service.name):
        state, reason, failed = "IN_PROGRESS", "ECS deployment in progress.", 0
    elif _ROLLOUT_FAILS.search(service.name):
        state, reason, failed = "FAILED", "ECS deployment circuit breaker: tasks failed to start.", 3
    else:
        if os.environ.get("MOTO_ECS_SERVICE_RUNNING"):
            service.running_count = service.desired_count
            service.pending_count = 0
            for d in service.deployments:
                d.update(runningCount=service.desired_count, pendingCount=0,
                         rolloutState="COMPLETED",
                         rolloutStateReason=f"ECS deployment {d.get('id')} completed.")
        return service
    service.running_count = 0
    service.pending_count = service.desired_count
    for d in service.deployments:
        d.update(runningCount=0, pendingCount=service.desired_count, failedTasks=failed,
                 rolloutState=state, rolloutStateReason=reason)
    return service


def service_init(self, *args, **kwargs):
    _service_init(self, *args, **kwargs)
    _unsteady(self)


ecs_models.Service.__init__ = service_init
_update_service_steady = ecs_models.EC2ContainerServiceBackend.update_service
ecs_models.EC2ContainerServiceBackend.update_service = lambda self, props: _unsteady(
    _update_service_steady(self, props))

# Secrets Manager: a secret deleted without recovery is removed asynchronously ("Secrets
# Manager deletes it asynchronously", DeleteSecret API reference), and a CreateSecret of the
# same name meanwhile fails with InvalidRequestException ("a secret with this name is already
# scheduled for deletion"). moto frees the name at once. Refused here for
# SECRET_REUSE_SECONDS after the delete.
import moto.secretsmanager.models as sm_models
from moto.secretsmanager.exceptions import InvalidRequestException as SmInvalidRequest

SECRET_REUSE_SECONDS = float(os.environ.get("AGENTBUS_SHIM_SECRET_SECONDS", "5"))
_force_deleted = {}
_delete_secret = sm_models.SecretsManagerBackend.delete_secret
_create_secret = sm_models.SecretsManagerBackend.create_secret


def delete_secret(self, secret_id, recovery_window_in_days, force_delete_without_recovery):
    out = _delete_secret(self, secret_id, recovery_window_in_days, force_delete_without_recovery)
    if force_delete_without_recovery:
        _force_deleted[(self.account_id, self.region_name, out[1])] = time.monotonic()
    return out


def create_secret(self, name, *args, **kwargs):
    deleted = _force_deleted.get((self.account_id, self.region_name, name))
    if deleted is not None and time.monotonic() - deleted < SECRET_REUSE_SECONDS:
        raise SmInvalidRequest(
            "You can't create this secret because a secret with this name is already scheduled for deletion."
        )
    return _create_secret(self, name, *args, **kwargs)


sm_models.SecretsManagerBackend.delete_secret = delete_secret
sm_models.SecretsManagerBackend.create_secret = create_secret

# Elastic Load Balancing CreateLoadBalancer: an Application Load Balancer needs subnets in at
# least two Availability Zones ("Application Load Balancers", ELB User Guide, "Availability
# Zones and load balancer nodes"; the API answers ValidationError). moto accepts one zone.
import moto.elbv2.models as elbv2_models
from moto.elbv2.exceptions import ELBClientError as RESTError

_create_load_balancer = elbv2_models.ELBv2Backend.create_load_balancer


def create_load_balancer(self, name, security_groups, subnet_ids, *args, **kwargs):
    zones = {self.ec2_backend.get_subnet(s).availability_zone for s in subnet_ids or [] if self.ec2_backend.get_subnet(s)}
    if subnet_ids and len(zones) < 2:
        raise RESTError("ValidationError", "At least two subnets in two different Availability Zones must be specified")
    for lb in self.load_balancers.values():
        if lb.name == name:
            same = sorted(lb.security_groups or []) == sorted(security_groups or []) and sorted(
                s.id for s in lb.subnets) == sorted(subnet_ids or [])
            if same:
                return lb
            raise elbv2_exceptions.DuplicateLoadBalancerName()
    return _create_load_balancer(self, name, security_groups, subnet_ids, *args, **kwargs)


elbv2_models.ELBv2Backend.create_load_balancer = create_load_balancer

# Elastic Load Balancing CreateLoadBalancer, CreateTargetGroup and CreateListener are
# idempotent: "If you attempt to create multiple [load balancers | target groups | listeners]
# with the same settings, each call succeeds" (their API references). moto refuses a second
# target group or listener, and creates a second load balancer of the same name. Here the
# same settings return the existing one, and other settings are refused as AWS refuses them.
import moto.elbv2.exceptions as elbv2_exceptions

_create_target_group = elbv2_models.ELBv2Backend.create_target_group


def create_target_group(self, name, **kwargs):
    for tg in self.target_groups.values():
        if tg.name == name:
            same = (tg.protocol or None) == (kwargs.get("protocol") or None) and str(tg.port) == str(
                kwargs.get("port")) and tg.vpc_id == kwargs.get("vpc_id") and tg.target_type == (
                kwargs.get("target_type") or "instance")
            if same:
                return tg
            raise elbv2_exceptions.DuplicateTargetGroupName()
    return _create_target_group(self, name, **kwargs)


elbv2_models.ELBv2Backend.create_target_group = create_target_group

_create_listener = elbv2_models.ELBv2Backend.create_listener


def create_listener(self, load_balancer_arn, protocol, port, ssl_policy, certificate, actions, *args, **kwargs):
    balancer = self.load_balancers.get(load_balancer_arn)
    # moto keys listeners by ARN, so it never finds a second one on the same port; ELB
    # refuses one with other settings (DuplicateListener).
    existing = next((l for l in balancer.listeners.values() if str(l.port) == str(port)), None) if balancer else None
    if existing is not None:
        wanted = [elbv2_models.FakeAction(a).data for a in actions]
        same = existing.protocol == (protocol or "").upper() and existing.certificate == certificate and [
            a.data for a in existing.default_actions] == wanted
        if same:
            return existing
        raise elbv2_exceptions.DuplicateListenerError()
    return _create_listener(self, load_balancer_arn, protocol, port, ssl_policy, certificate, actions, *args, **kwargs)


elbv2_models.ELBv2Backend.create_listener = create_listener

# CloudWatch Logs PutMetricFilter "creates or updates a metric filter" (API reference): a
# filter is named within its log group. moto appends a second filter of the same name.
import moto.logs.metric_filters as logs_metric_filters

_add_filter = logs_metric_filters.MetricFilters.add_filter


def add_filter(self, filter_name, filter_pattern, log_group_name, metric_transformations):
    self.metric_filters = [
        f for f in self.metric_filters
        if not (f["filterName"] == filter_name and f["logGroupName"] == log_group_name)
    ]
    _add_filter(self, filter_name, filter_pattern, log_group_name, metric_transformations)


logs_metric_filters.MetricFilters.add_filter = add_filter

# DynamoDB UpdateTable with SSESpecification switches a table's encryption (UpdateTable API
# reference); moto ignores it.
import moto.dynamodb.responses as ddb_responses

_ddb_update_table = ddb_responses.DynamoHandler.update_table


def ddb_update_table(self):
    sse = self.body.get("SSESpecification")
    if sse is not None:
        table = self.dynamodb_backend.get_table(self.body["TableName"])
        spec = dict(sse)
        if spec.get("Enabled") and "KMSMasterKeyId" not in spec:
            spec["KMSMasterKeyId"] = table._get_default_encryption_key(self.current_account, self.region)
        table.sse_specification = spec if spec.get("Enabled") else None
    return _ddb_update_table(self)


ddb_responses.DynamoHandler.update_table = ddb_update_table

# Seconds after DeleteQueue during which the name cannot be used again.
QUEUE_REUSE_SECONDS = float(os.environ.get("AGENTBUS_SHIM_QUEUE_SECONDS", "2"))
_deleted_queues = {}


class QueueDeletedRecently(SQSException):
    def __init__(self):
        super().__init__(
            "AWS.SimpleQueueService.QueueDeletedRecently",
            "You must wait 60 seconds after deleting a queue before you can create another with the same name.",
        )


_delete_queue = sqs_models.SQSBackend.delete_queue
_create_queue = sqs_models.SQSBackend.create_queue


def delete_queue(self, queue_name):
    _delete_queue(self, queue_name)
    _deleted_queues[(self.account_id, self.region_name, queue_name)] = time.monotonic()


def create_queue(self, name, tags=None, **kwargs):
    deleted = _deleted_queues.get((self.account_id, self.region_name, name))
    if deleted is not None and time.monotonic() - deleted < QUEUE_REUSE_SECONDS:
        raise QueueDeletedRecently()
    return _create_queue(self, name, tags, **kwargs)


sqs_models.SQSBackend.delete_queue = delete_queue
sqs_models.SQSBackend.create_queue = create_queue

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


def describe_budget(self):
    budget = dict(_budget(self, self._get_param("AccountId"), self._get_param("BudgetName")).to_dict())
    if not self._get_param("ShowFilterExpression"):
        budget.pop("FilterExpression", None)
    return json.dumps({"Budget": budget})


_sfn_stop = sfn_execution.Execution.stop
_sfn_reflect = sfn_execution.BaseExecutionWorkerCommunication._reflect_execution_status


def sfn_stop(self, stop_date, error, cause):
    _sfn_stop(self, stop_date=stop_date, error=error, cause=cause)
    self.exec_status = ExecutionStatus.ABORTED
    self.stop_date = stop_date


def sfn_reflect(self):
    # A stopped execution stays ABORTED, whatever its waiting task does afterwards.
    if self.execution.exec_status == ExecutionStatus.ABORTED:
        return
    _sfn_reflect(self)


sfn_execution.Execution.stop = sfn_stop
sfn_execution.BaseExecutionWorkerCommunication._reflect_execution_status = sfn_reflect

def sfn_send_task_failure(self):
    self.stepfunction_backend.send_task_failure(
        self._get_param("taskToken"), error=self._get_param("error"), cause=self._get_param("cause")
    )
    return EmptyResult()


def sfn_get_execution_history(self):
    history = self.stepfunction_backend.get_execution_history(self._get_param("executionArn"))
    events = list(history["events"] if isinstance(history, dict) else history.get("events", []))
    if self._get_param("reverseOrder"):
        events.reverse()
    start = int(self._get_param("nextToken") or 0)
    limit = int(self._get_param("maxResults") or 100) or 100
    page = {"events": events[start:start + limit]}
    if start + limit < len(events):
        page["nextToken"] = str(start + limit)
    return ActionResult(page)


StepFunctionResponse.send_task_failure = sfn_send_task_failure
StepFunctionResponse.get_execution_history = sfn_get_execution_history
S3Response.get_bucket_versioning = get_bucket_versioning
BudgetsResponse.describe_budget = describe_budget
BudgetsResponse.describe_subscribers_for_notification = describe_subscribers_for_notification
BudgetsResponse.update_budget = update_budget


# Budgets' tags: CreateBudget's ResourceTags, TagResource, UntagResource and
# ListTagsForResource by the budget's ARN (`arn:aws:budgets::ACCOUNT:budget/NAME`; Budgets API
# reference). moto ignores ResourceTags and has none of the three operations.
BUDGET_TAGS = {}
_create_budget = BudgetsResponse.create_budget
_delete_budget = BudgetsResponse.delete_budget


def _budget_by_arn(self):
    arn = self._get_param("ResourceARN") or ""
    parts = arn.split(":", 5)
    account = parts[4] if len(parts) == 6 else ""
    name = arn.partition(":budget/")[2]
    _budget(self, account, name)
    return (account, name)


def create_budget_tagged(self):
    out = _create_budget(self)
    name = self._get_param("Budget")["BudgetName"]
    tags = {t["Key"]: t["Value"] for t in self._get_param("ResourceTags") or []}
    BUDGET_TAGS[(self._get_param("AccountId"), name)] = tags
    return out


def delete_budget_tagged(self):
    out = _delete_budget(self)
    BUDGET_TAGS.pop((self._get_param("AccountId"), self._get_param("BudgetName")), None)
    return out


def budget_tag_resource(self):
    key = _budget_by_arn(self)
    tags = BUDGET_TAGS.setdefault(key, {})
    tags.update({t["Key"]: t["Value"] for t in self._get_param("ResourceTags") or []})
    return json.dumps({})


def budget_untag_resource(self):
    key = _budget_by_arn(self)
    for k in self._get_param("ResourceTagKeys") or []:
        BUDGET_TAGS.get(key, {}).pop(k, None)
    return json.dumps({})


def budget_list_tags(self):
    key = _budget_by_arn(self)
    tags = BUDGET_TAGS.get(key, {})
    return json.dumps({"ResourceTags": [{"Key": k, "Value": v} for k, v in sorted(tags.items())]})


BudgetsResponse.create_budget = create_budget_tagged
BudgetsResponse.delete_budget = delete_budget_tagged
BudgetsResponse.tag_resource = budget_tag_resource
BudgetsResponse.untag_resource = budget_untag_resource
BudgetsResponse.list_tags_for_resource = budget_list_tags


# Application Auto Scaling, as its API reference describes it and moto 5.2 does not:
# - tags: RegisterScalableTarget's Tags (on a new target only), TagResource, UntagResource and
#   ListTagsForResource by the target's ARN (moto keeps none);
# - PutScalingPolicy on a resource with no scalable target answers ObjectNotFoundException
#   (moto makes the policy anyway);
# - DeregisterScalableTarget deletes the target's scaling policies (moto keeps them), and it
#   and DeleteScalingPolicy answer ObjectNotFoundException for what does not exist (moto:
#   ValidationException).
import moto.applicationautoscaling.models as aas_models
from moto.applicationautoscaling.responses import ApplicationAutoScalingResponse

AAS_TAGS = {}


class AasObjectNotFound(JsonRESTError):
    def __init__(self, message):
        super().__init__("ObjectNotFoundException", message)


class AasResourceNotFound(JsonRESTError):
    def __init__(self, message):
        super().__init__("ResourceNotFoundException", message)


_aas_register = aas_models.ApplicationAutoscalingBackend.register_scalable_target
_aas_deregister = aas_models.ApplicationAutoscalingBackend.deregister_scalable_target
_aas_put_policy = aas_models.ApplicationAutoscalingBackend.put_scaling_policy
_aas_delete_policy = aas_models.ApplicationAutoscalingBackend.delete_scaling_policy


def aas_deregister(self, namespace, r_id, dimension):
    if not self._scalable_target_exists(r_id, dimension):
        raise AasObjectNotFound(
            f"No scalable target registered for service namespace: {namespace}, resource ID: {r_id}, scalable dimension: {dimension}"
        )
    target = self.targets[dimension][r_id]
    AAS_TAGS.pop(target.arn, None)
    for key, policy in list(self.policies.items()):
        if (policy.service_namespace, policy.resource_id, policy.scalable_dimension) == (namespace, r_id, dimension):
            policy.delete_alarms(self.account_id, self.region_name)
            del self.policies[key]
    return _aas_deregister(self, namespace, r_id, dimension)


def aas_put_policy(self, policy_name, service_namespace, resource_id, scalable_dimension, policy_body, policy_type):
    if not self._scalable_target_exists(resource_id, scalable_dimension):
        raise AasObjectNotFound(
            f"No scalable target registered for service namespace: {service_namespace}, resource ID: {resource_id}, scalable dimension: {scalable_dimension}"
        )
    return _aas_put_policy(self, policy_name, service_namespace, resource_id, scalable_dimension, policy_body, policy_type)


def aas_delete_policy(self, policy_name, service_namespace, resource_id, scalable_dimension):
    key = aas_models.FakeApplicationAutoscalingPolicy.formulate_key(
        service_namespace, resource_id, scalable_dimension, policy_name
    )
    if key not in self.policies:
        raise AasObjectNotFound(f"No scaling policy found for service namespace: {service_namespace}, resource ID: {resource_id}, scalable dimension: {scalable_dimension}, policy name: {policy_name}")
    return _aas_delete_policy(self, policy_name, service_namespace, resource_id, scalable_dimension)


aas_models.ApplicationAutoscalingBackend.deregister_scalable_target = aas_deregister
aas_models.ApplicationAutoscalingBackend.put_scaling_policy = aas_put_policy
aas_models.ApplicationAutoscalingBackend.delete_scaling_policy = aas_delete_policy

_aas_register_response = ApplicationAutoScalingResponse.register_scalable_target


def aas_register_response(self):
    backend = self.applicationautoscaling_backend
    existed = backend._scalable_target_exists(self._get_param("ResourceId"), self._get_param("ScalableDimension"))
    out = _aas_register_response(self)
    arn = json.loads(out)["ScalableTargetARN"]
    if not existed:
        AAS_TAGS[arn] = dict(self._get_param("Tags") or {})
    return out


def _aas_target_arn(self):
    arn = self._get_param("ResourceARN")
    if arn not in AAS_TAGS:
        raise AasResourceNotFound(f"No scalable target found for ARN {arn}")
    return arn


def aas_tag_resource(self):
    arn = _aas_target_arn(self)
    AAS_TAGS[arn].update(self._get_param("Tags") or {})
    return json.dumps({})


def aas_untag_resource(self):
    arn = _aas_target_arn(self)
    for k in self._get_param("TagKeys") or []:
        AAS_TAGS[arn].pop(k, None)
    return json.dumps({})


def aas_list_tags(self):
    return json.dumps({"Tags": AAS_TAGS[_aas_target_arn(self)]})


ApplicationAutoScalingResponse.register_scalable_target = aas_register_response
ApplicationAutoScalingResponse.tag_resource = aas_tag_resource
ApplicationAutoScalingResponse.untag_resource = aas_untag_resource
ApplicationAutoScalingResponse.list_tags_for_resource = aas_list_tags

# --- Smithy RPC v2 CBOR, through moto's JSON protocol -------------------------------------

# Service shape names (the path's `{service}`) of the services the Rust SDK calls over CBOR.
CBOR_SERVICES = {"GraniteServiceVersion20100801": "cloudwatch"}
_models = {}


def _model(service_shape):
    name = CBOR_SERVICES.get(service_shape)
    if name is None:
        return None
    if name not in _models:
        _models[name] = botocore.session.get_session().get_service_model(name)
    return _models[name]


def _to_json(value):
    """A decoded CBOR request as moto's JSON protocol wants it."""
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode()
    return value


def _to_cbor(value, shape):
    """A JSON answer as the CBOR protocol encodes it, by the output shape."""
    if shape is None or value is None:
        return value
    kind = shape.type_name
    if kind == "structure" and isinstance(value, dict):
        return {
            k: _to_cbor(v, shape.members.get(k)) for k, v in value.items() if v is not None
        }
    if kind == "list" and isinstance(value, list):
        return [_to_cbor(v, shape.member) for v in value]
    if kind == "map" and isinstance(value, dict):
        return {k: _to_cbor(v, shape.value) for k, v in value.items()}
    if kind == "timestamp":
        if isinstance(value, str):
            value = datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        return cbor2.CBORTag(1, float(value))
    if kind in ("double", "float"):
        return float(value)
    if kind in ("integer", "long"):
        return int(value)
    if kind == "blob" and isinstance(value, str):
        return base64.b64decode(value)
    return value


_dispatch = DomainDispatcherApplication.__call__


# ECR blobs: the bytes of every completed layer upload, by (account, region, repository,
# digest), and GetDownloadUrlForLayer's answer pointing at them.
import moto.ecr.models as ecr_models
import moto.ecr.responses as ecr_responses
from moto.ecr.exceptions import RepositoryNotFoundException as EcrRepositoryNotFound

ECR_BLOB_PATH = "/__ecr-blob/"
ECR_BLOBS = {}
_complete_layer_upload = ecr_models.ECRBackend.complete_layer_upload


def complete_layer_upload(self, repository_name, upload_id, layer_digests, registry_id=None):
    repository = self._get_repository(repository_name, registry_id)
    upload = repository.uploads.get(upload_id)
    data = bytes(upload.layer_parts) if upload is not None else None
    out = _complete_layer_upload(self, repository_name, upload_id, layer_digests, registry_id)
    if data is not None:
        key = (self.account_id, self.region_name, repository_name, out["layerDigest"])
        ECR_BLOBS[key] = data
    return out


ecr_models.ECRBackend.complete_layer_upload = complete_layer_upload


class EcrLayersNotFound(JsonRESTError):
    def __init__(self, message):
        super().__init__("LayersNotFoundException", message)


class EcrLayerInaccessible(JsonRESTError):
    def __init__(self, message):
        super().__init__("LayerInaccessibleException", message)


def get_download_url_for_layer(self):
    name = self._get_param("repositoryName")
    digest = self._get_param("layerDigest")
    backend = self.ecr_backend
    repository = backend.repositories.get(name)
    if repository is None:
        raise EcrRepositoryNotFound(name, self._get_param("registryId") or self.current_account)
    key = (backend.account_id, backend.region_name, name, digest)
    if key not in ECR_BLOBS:
        raise EcrLayersNotFound(f"The layer '{digest}' does not exist in the repository '{name}'")
    referenced = False
    for image in repository.images:
        manifest = json.loads(image.image_manifest)
        digests = [manifest.get("config", {}).get("digest")]
        digests += [l.get("digest") for l in manifest.get("layers", [])]
        referenced = referenced or digest in digests
    if not referenced:
        raise EcrLayerInaccessible(f"The layer '{digest}' is not associated with an image")
    host = self.headers.get("Host", "127.0.0.1")
    url = f"http://{host}{ECR_BLOB_PATH}{backend.account_id}/{backend.region_name}/{digest}/{name}"
    return ActionResult({"downloadUrl": url, "layerDigest": digest})


ecr_responses.ECRResponse.get_download_url_for_layer = get_download_url_for_layer


def _ecr_blob(environ, start_response):
    rest = environ["PATH_INFO"][len(ECR_BLOB_PATH):]
    account, region, digest, name = rest.split("/", 3)
    data = ECR_BLOBS.get((account, region, name, digest))
    if data is None:
        start_response("404 Not Found", [("Content-Length", "0")])
        return [b""]
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(data)))],
    )
    return [data]


# Set on a CBOR request handed to moto as JSON: its signature covers the CBOR body, so moto's
# check of it (with IAM enforced) would fail; its permission is still checked. Never taken
# from a client.
TRANSLATED = "HTTP_X_SHIM_TRANSLATED"
_check_signature = IAMRequestBase.check_signature


def _signature(self):
    if self._headers.get("X-Shim-Translated") != "cbor":
        _check_signature(self)


IAMRequestBase.check_signature = _signature


# The raw body of a form-encoded (query protocol) request. moto checks a signature against
# the form it parsed, encoded again by Python, which differs from the SDK's own encoding (a
# space as `%20`, not `+`), so a request signed correctly by the Rust SDK fails its check
# (only matters when IAM is enforced). Kept here, before the form is parsed, for the check.
RAW_FORM = "shim.raw_form"
_setup_class = BaseResponse.setup_class


def _setup_with_raw_form(self, request, *args, **kwargs):
    _setup_class(self, request, *args, **kwargs)
    raw = getattr(request, "environ", {}).get(RAW_FORM)
    if raw and not self.raw_body:
        self.raw_body = raw


BaseResponse.setup_class = _setup_with_raw_form


# RDS states: AWS takes minutes to create or delete a cluster or an instance, showing
# `creating` and `deleting` meanwhile (DescribeDBClusters' and DescribeDBInstances' Status;
# "Viewing Amazon Aurora DB cluster status" and "Viewing Amazon RDS DB instance status",
# Aurora User Guide); an instance or cluster being deleted is still described, as `deleting`,
# until it is gone. moto makes them `available` at once and forgets them on delete. Here each
# stays `creating` for RDS_SETTLE_SECONDS after its creation, and `deleting` (still described)
# for as long after its deletion.
RDS_SETTLE_SECONDS = float(os.environ.get("AGENTBUS_SHIM_RDS_SECONDS", "1"))


def _busy(obj, status):
    obj.__dict__["_shim_busy"] = (status, time.monotonic() + RDS_SETTLE_SECONDS)


def _busy_status(obj):
    busy = obj.__dict__.get("_shim_busy")
    if busy and time.monotonic() < busy[1]:
        return busy[0]
    return None


def _instance_status(self):
    return _busy_status(self) or self.__dict__.get("_shim_status", "available")


def _set_instance_status(self, value):
    self.__dict__["_shim_status"] = value


rds_models.DBInstance.status = property(_instance_status, _set_instance_status)
_cluster_status = rds_models.DBCluster.status


def _cluster_status_busy(self):
    return _busy_status(self) or _cluster_status.fget(self)


rds_models.DBCluster.status = property(_cluster_status_busy, _cluster_status.fset)


def _created(create):
    @functools.wraps(create)
    def wrapper(self, *args, **kwargs):
        made = create(self, *args, **kwargs)
        _busy(made, "creating")
        return made

    return wrapper


class DBClusterAlreadyExistsFault(RDSClientError):
    def __init__(self):
        super().__init__("DBClusterAlreadyExistsFault", "DB cluster already exists")


def _unique_cluster(create):
    # CreateDBCluster with the identifier of an existing cluster: AWS answers
    # DBClusterAlreadyExistsFault ("The user already has a DB cluster with the given
    # identifier", CreateDBCluster API reference, Errors); moto replaces the cluster (and then
    # fails on its automated snapshot's name).
    @functools.wraps(create)
    def wrapper(self, kwargs):
        if kwargs.get("db_cluster_identifier") in self.clusters:
            raise DBClusterAlreadyExistsFault()
        return create(self, kwargs)

    return wrapper


class DBSubnetGroupAlreadyExistsFault(RDSClientError):
    def __init__(self):
        super().__init__("DBSubnetGroupAlreadyExists", "DB subnet group already exists")


_create_subnet_group = rds_models.RDSBackend.create_subnet_group


def _unique_subnet_group(self, subnet_name, *args, **kwargs):
    # CreateDBSubnetGroup of an existing name: AWS answers DBSubnetGroupAlreadyExists
    # (CreateDBSubnetGroup API reference, Errors); moto replaces the group.
    if subnet_name in self.subnet_groups:
        raise DBSubnetGroupAlreadyExistsFault()
    return _create_subnet_group(self, subnet_name, *args, **kwargs)


rds_models.RDSBackend.create_subnet_group = _unique_subnet_group
rds_models.RDSBackend.create_db_instance = _created(rds_models.RDSBackend.create_db_instance)
rds_models.RDSBackend.create_db_cluster = _created(
    _unique_cluster(rds_models.RDSBackend.create_db_cluster)
)


def _deleted(delete, kind, key):
    @functools.wraps(delete)
    def wrapper(self, *args, **kwargs):
        identifier = args[0] if args else kwargs.get(key)
        gone = delete(self, *args, **kwargs)
        _busy(gone, "deleting")
        self.__dict__.setdefault(f"_shim_deleting_{kind}", {})[identifier] = gone
        return gone

    return wrapper


def _with_deleting(describe, kind, key):
    @functools.wraps(describe)
    def wrapper(self, *args, **kwargs):
        identifier = args[0] if args else kwargs.get(key)
        filters = args[1] if len(args) > 1 else kwargs.get("filters")
        deleting = self.__dict__.setdefault(f"_shim_deleting_{kind}", {})
        for k in [k for k, v in deleting.items() if _busy_status(v) is None]:
            del deleting[k]
        if identifier and identifier in deleting:
            try:
                return describe(self, *args, **kwargs)
            except RDSClientError:
                return [deleting[identifier]]
        found = describe(self, *args, **kwargs)
        if not identifier and not filters:
            found += list(deleting.values())
        elif not identifier and set(filters) == {"db-cluster-id"}:
            found += [
                d for d in deleting.values()
                if getattr(d, "db_cluster_identifier", None) in filters["db-cluster-id"]
            ]
        return found

    return wrapper


rds_models.RDSBackend.delete_db_instance = _deleted(
    rds_models.RDSBackend.delete_db_instance, "instances", "db_instance_identifier"
)
rds_models.RDSBackend.delete_db_cluster = _deleted(
    rds_models.RDSBackend.delete_db_cluster, "clusters", "cluster_identifier"
)
rds_models.RDSBackend.describe_db_instances = _with_deleting(
    rds_models.RDSBackend.describe_db_instances, "instances", "db_instance_identifier"
)
rds_models.RDSBackend.describe_db_clusters = _with_deleting(
    rds_models.RDSBackend.describe_db_clusters, "clusters", "db_cluster_identifier"
)


# X-Ray's trace destination and CloudWatch's OTLP traces endpoint (moto 5.2 has neither).
# GetTraceSegmentDestination / UpdateTraceSegmentDestination (X-Ray API reference): `XRay`
# until updated; an update to `CloudWatchLogs` is PENDING, then ACTIVE (here after
# XRAY_SETTLE_SECONDS). Transaction Search's documented set-up puts a CloudWatch Logs resource
# policy letting xray.amazonaws.com write to `aws/spans` first; an update without one is
# refused here. POST /v1/traces (CloudWatch User Guide, "OTLP endpoints"): OTLP 1.x binary
# protobuf, signed with SigV4 for `xray`; the signature is checked with botocore's signer and
# the body decoded with the OpenTelemetry project's own protobuf classes, and with
# Transaction Search on each span is written to the `aws/spans` log group as a JSON line.
XRAY_SETTLE_SECONDS = float(os.environ.get("AGENTBUS_SHIM_XRAY_SECONDS", "1"))
XRAY_DESTINATIONS = {}
SPANS_GROUP = "aws/spans"


def _scope(environ):
    """Access key, date, region and service of a request's SigV4 Authorization header."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        return None
    fields = dict(
        part.strip().split("=", 1) for part in auth[len("AWS4-HMAC-SHA256 "):].split(",") if "=" in part
    )
    scope = fields.get("Credential", "").split("/")
    if len(scope) != 5:
        return None
    return {
        "key": scope[0],
        "region": scope[2],
        "service": scope[3],
        "signed": fields.get("SignedHeaders", "").split(";"),
        "signature": fields.get("Signature", ""),
    }


def _json_answer(start_response, status, body):
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def _xray_error(start_response, code, message):
    return _json_answer(start_response, "400 Bad Request", {"__type": code, "Message": message})


def _spans_policy_exists(region):
    from moto.logs.models import logs_backends

    backend = logs_backends[DEFAULT_ACCOUNT_ID][region]
    for policy in backend.describe_resource_policies():
        doc = json.loads(policy.policy_document)
        for s in doc.get("Statement", []):
            principal = s.get("Principal", {}).get("Service")
            principals = principal if isinstance(principal, list) else [principal]
            actions = s.get("Action")
            actions = actions if isinstance(actions, list) else [actions]
            resources = s.get("Resource")
            resources = resources if isinstance(resources, list) else [resources]
            if (
                s.get("Effect") == "Allow"
                and "xray.amazonaws.com" in principals
                and any(a in ("logs:PutLogEvents", "logs:*") for a in actions)
                and any(f"log-group:{SPANS_GROUP}" in (r or "") for r in resources)
            ):
                return True
    return False


def _destination(region):
    d = XRAY_DESTINATIONS.get((DEFAULT_ACCOUNT_ID, region))
    if d is None:
        return {"Destination": "XRay", "Status": "ACTIVE"}
    status = "ACTIVE" if time.monotonic() >= d["active_at"] else "PENDING"
    return {"Destination": d["Destination"], "Status": status}


def _xray_destination(environ, start_response, scope):
    region = scope["region"]
    if environ["PATH_INFO"] == "/GetTraceSegmentDestination":
        return _json_answer(start_response, "200 OK", _destination(region))
    length = int(environ.get("CONTENT_LENGTH") or 0)
    raw = environ["wsgi.input"].read(length) if length else b""
    wanted = (json.loads(raw) if raw.strip() else {}).get("Destination")
    if wanted not in ("XRay", "CloudWatchLogs"):
        return _xray_error(start_response, "InvalidRequestException", f"Destination {wanted!r} is not XRay or CloudWatchLogs")
    if wanted == "CloudWatchLogs" and not _spans_policy_exists(region):
        return _xray_error(
            start_response,
            "InvalidRequestException",
            f"X-Ray may not write to the {SPANS_GROUP} log group: no CloudWatch Logs resource policy allows it",
        )
    XRAY_DESTINATIONS[(DEFAULT_ACCOUNT_ID, region)] = {
        "Destination": wanted,
        "active_at": time.monotonic() + XRAY_SETTLE_SECONDS,
    }
    return _json_answer(start_response, "200 OK", _destination(region))


def _secret_key(access_key):
    from moto.iam.models import iam_backends

    for partitions in iam_backends.values():
        for backend in partitions.values():
            for user in backend.users.values():
                for key in user.access_keys:
                    if key.access_key_id == access_key:
                        return key.secret_access_key
    return os.environ.get("AGENTBUS_SHIM_SECRET_KEY", "testing")


def _signature_holds(environ, scope, body):
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    headers = {}
    for name in scope["signed"]:
        key = "HTTP_" + name.upper().replace("-", "_")
        if name == "content-type":
            key = "CONTENT_TYPE"
        if key not in environ:
            return False
        headers[name] = environ[key]
    host = headers.get("host", "")
    request = AWSRequest(method=environ["REQUEST_METHOD"], url=f"http://{host}{environ['PATH_INFO']}", data=body, headers=headers)
    request.context["timestamp"] = headers.get("x-amz-date", "")
    signer = SigV4Auth(
        Credentials(scope["key"], _secret_key(scope["key"]), headers.get("x-amz-security-token")),
        scope["service"],
        scope["region"],
    )
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    return hmac.compare_digest(expected, scope["signature"])


def _span_line(resource, scope_name, span):
    from google.protobuf.json_format import MessageToDict

    attrs = {kv["key"]: next(iter(kv["value"].values())) for kv in MessageToDict(span).get("attributes", [])}
    kinds = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
    codes = {0: "UNSET", 1: "OK", 2: "ERROR"}
    return {
        "resource": {"attributes": resource},
        "scope": {"name": scope_name},
        "traceId": span.trace_id.hex(),
        "spanId": span.span_id.hex(),
        "parentSpanId": span.parent_span_id.hex(),
        "name": span.name,
        "kind": kinds.get(span.kind, "UNSPECIFIED"),
        "startTimeUnixNano": span.start_time_unix_nano,
        "endTimeUnixNano": span.end_time_unix_nano,
        "durationNano": span.end_time_unix_nano - span.start_time_unix_nano,
        "attributes": attrs,
        "status": {"code": codes.get(span.status.code, "UNSET"), "message": span.status.message},
    }


def _otlp_traces(environ, start_response, scope):
    from google.protobuf.message import DecodeError
    from moto.logs.models import logs_backends
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    if scope is None or scope["service"] != "xray" or not _signature_holds(environ, scope, body):
        return _json_answer(start_response, "403 Forbidden", {"message": "The request signature we calculated does not match the signature you provided."})
    if not environ.get("CONTENT_TYPE", "").startswith("application/x-protobuf"):
        return _json_answer(start_response, "415 Unsupported Media Type", {"message": "send application/x-protobuf"})
    try:
        request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
    except DecodeError as e:
        return _json_answer(start_response, "400 Bad Request", {"message": f"not an ExportTraceServiceRequest: {e}"})
    from google.protobuf.json_format import MessageToDict

    if _destination(scope["region"])["Destination"] == "CloudWatchLogs":
        backend = logs_backends[DEFAULT_ACCOUNT_ID][scope["region"]]
        if SPANS_GROUP not in backend.groups:
            backend.create_log_group(SPANS_GROUP, {})
        group = backend.groups[SPANS_GROUP]
        if "default" not in group.streams:
            backend.create_log_stream(SPANS_GROUP, "default")
        events = []
        for rs in request.resource_spans:
            resource = {
                kv["key"]: next(iter(kv["value"].values()))
                for kv in MessageToDict(rs.resource).get("attributes", [])
            }
            for ss in rs.scope_spans:
                for span in ss.spans:
                    line = _span_line(resource, ss.scope.name, span)
                    events.append({"timestamp": span.end_time_unix_nano // 1_000_000, "message": json.dumps(line)})
        events.sort(key=lambda e: e["timestamp"])
        if events:
            backend.put_log_events(SPANS_GROUP, "default", events)
    answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
    start_response("200 OK", [("Content-Type", "application/x-protobuf"), ("Content-Length", str(len(answer)))])
    return [answer]


def _cbor_call(self, environ, start_response):
    environ.pop(TRANSLATED, None)
    if environ.get("PATH_INFO", "").startswith(ECR_BLOB_PATH):
        return _ecr_blob(environ, start_response)
    scope = _scope(environ)
    if environ.get("PATH_INFO") == "/v1/traces" and environ.get("REQUEST_METHOD") == "POST":
        return _otlp_traces(environ, start_response, scope)
    if (
        scope is not None
        and scope["service"] == "xray"
        and environ.get("PATH_INFO") in ("/GetTraceSegmentDestination", "/UpdateTraceSegmentDestination")
    ):
        return _xray_destination(environ, start_response, scope)
    if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(raw)
        environ[RAW_FORM] = raw
    parts = environ.get("PATH_INFO", "").strip("/").split("/")
    model = _model(parts[1]) if len(parts) == 4 else None
    if (
        environ.get("HTTP_SMITHY_PROTOCOL") != "rpc-v2-cbor"
        or parts[0] != "service"
        or parts[2] != "operation"
        or model is None
    ):
        return _dispatch(self, environ, start_response)
    operation = parts[3]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    raw = environ["wsgi.input"].read(length) if length else b""
    body = json.dumps(_to_json(cbor2.loads(raw)) if raw else {}).encode()
    inner = dict(environ)
    inner.pop("HTTP_SMITHY_PROTOCOL", None)
    inner.update(
        {
            "PATH_INFO": "/",
            "CONTENT_TYPE": "application/x-amz-json-1.0",
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_X_AMZ_TARGET": f"{model.metadata['targetPrefix']}.{operation}",
            TRANSLATED: "cbor",
            "wsgi.input": io.BytesIO(body),
        }
    )
    answer = {}

    def capture(status, headers, exc_info=None):
        answer["status"], answer["headers"] = status, headers
        return lambda data: None

    chunks = b"".join(_dispatch(self, inner, capture))
    data = json.loads(chunks) if chunks.strip() else {}
    status = answer["status"]
    if status.startswith("2"):
        data = _to_cbor(data, model.operation_model(operation).output_shape)
    payload = cbor2.dumps(data)
    headers = [
        (k, v)
        for k, v in answer["headers"]
        if k.lower() in ("x-amzn-requestid", "x-amzn-query-error")
    ]
    headers += [
        ("Content-Type", "application/cbor"),
        ("Smithy-Protocol", "rpc-v2-cbor"),
        ("Content-Length", str(len(payload))),
    ]
    start_response(status, headers)
    return [payload]


def _interpreter_client(region, service, state_credentials=None):
    """moto's boto_client_for, on 127.0.0.1 instead of localhost."""
    from botocore.config import Config
    from moto.settings import moto_server_port
    from moto.stepfunctions.parser.asl.component.common.timeouts.timeout import TimeoutSeconds
    import boto3

    kwargs = {}
    if not sfn_boto.botocore_stubber.enabled:
        kwargs["endpoint_url"] = f"http://127.0.0.1:{moto_server_port()}"
    return boto3.client(
        aws_access_key_id="ak",
        region_name=region,
        service_name=service,
        aws_secret_access_key="sk",
        config=Config(
            parameter_validation=False,
            retries={"max_attempts": 0, "total_max_attempts": 1},
            connect_timeout=TimeoutSeconds.DEFAULT_TIMEOUT_SECONDS,
            read_timeout=TimeoutSeconds.DEFAULT_TIMEOUT_SECONDS,
        ),
        **kwargs,
    )


_TASK = "moto.stepfunctions.parser.asl.component.state.exec.state_task"
_MAP = "moto.stepfunctions.parser.asl.component.state.exec.state_map"
for _name in [
    f"{_TASK}.lambda_eval_utils",
    f"{_MAP}.result_writer.resource_eval.resource_eval_s3",
    f"{_MAP}.item_reader.eval.resource_eval_s3",
] + [
    f"{_TASK}.service.state_task_service_{s}"
    for s in ("unsupported", "glue", "events", "ecs", "sqs", "sfn", "dynamodb", "batch", "sns", "aws_sdk")
]:
    importlib.import_module(_name).boto_client_for = _interpreter_client
sfn_boto.boto_client_for = _interpreter_client


# CloudWatch Logs JSON filter patterns (`{ $.detail.tenant = "a" }`, "Filter pattern syntax
# for metric filters, subscription filters, filter log events, and Live Tail", CloudWatch Logs
# User Guide): moto matches every event for them. The equality form is matched here.
import re

import moto.logs.models as logs_models

_EventMessageFilter = logs_models.EventMessageFilter
_JSON_EQUALS = re.compile(r'^\{\s*\$\.([A-Za-z0-9_.]+)\s*=\s*(?:"([^"]*)"|(-?[0-9.]+))\s*\}$')


class JsonOrMessageFilter:
    def __init__(self, pattern):
        self.json = _JSON_EQUALS.match(pattern.strip()) if pattern else None
        self.other = None if self.json else _EventMessageFilter(pattern)

    def matches(self, message):
        if self.other is not None:
            return self.other.matches(message)
        try:
            value = json.loads(message)
        except ValueError:
            return False
        for part in self.json.group(1).split("."):
            if not isinstance(value, dict) or part not in value:
                return False
            value = value[part]
        text, number = self.json.group(2), self.json.group(3)
        return value == text if text is not None else str(value) == number


logs_models.EventMessageFilter = JsonOrMessageFilter


# CloudWatch Logs Embedded Metric Format ("Specification: Embedded metric format",
# CloudWatch User Guide): with the header `x-amzn-logs-format: json/emf` on PutLogEvents,
# each event that is a valid EMF document has its metrics extracted into CloudWatch. The
# specification's checks: `_aws` with a number `Timestamp` and a `CloudWatchMetrics` array;
# each directive a `Namespace` string, `Dimensions` an array of arrays of at most 30 names,
# `Metrics` at most 100 objects with a `Name` (and an optional `Unit`); every dimension a
# string member of the root and every metric a number or an array of at most 100 numbers
# there. A document failing any check yields no metrics (AWS counts it in
# EMFValidationErrors); the event is stored either way.
import moto.logs.responses as logs_responses
from datetime import datetime, timezone

_put_log_events = logs_responses.LogsResponse.put_log_events


def _emf_metrics(message):
    try:
        doc = json.loads(message)
        meta = doc["_aws"]
        when = meta["Timestamp"]
        directives = meta["CloudWatchMetrics"]
    except (ValueError, TypeError, KeyError):
        return None
    if not isinstance(doc, dict) or isinstance(when, bool) or not isinstance(when, (int, float)):
        return None
    if not isinstance(directives, list):
        return None
    # moto keeps naive UTC datetimes.
    stamp = datetime.fromtimestamp(when / 1000, tz=timezone.utc).replace(tzinfo=None)
    out = []
    for d in directives:
        ns, dims, metrics = d.get("Namespace"), d.get("Dimensions"), d.get("Metrics")
        if not isinstance(ns, str) or not ns or not isinstance(dims, list) or not isinstance(metrics, list):
            return None
        if len(metrics) > 100:
            return None
        for dim_set in dims:
            if not isinstance(dim_set, list) or len(dim_set) > 30:
                return None
            if any(not isinstance(n, str) or not isinstance(doc.get(n), str) for n in dim_set):
                return None
        for m in metrics:
            name = m.get("Name") if isinstance(m, dict) else None
            value = doc.get(name) if isinstance(name, str) else None
            values = value if isinstance(value, list) else [value]
            if not values or len(values) > 100:
                return None
            if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
                return None
            for dim_set in dims or [[]]:
                out.append((ns, {
                    "MetricName": name,
                    "Dimensions": [{"Name": n, "Value": doc[n]} for n in dim_set],
                    "Values": [float(v) for v in values],
                    "Unit": m.get("Unit"),
                    "Timestamp": stamp,
                }))
    return out


def put_log_events_emf(self):
    answer = _put_log_events(self)
    if self.headers.get("x-amzn-logs-format") == "json/emf":
        from moto.cloudwatch.models import cloudwatch_backends
        backend = cloudwatch_backends[self.current_account][self.region]
        for event in self._get_param("logEvents") or []:
            for ns, datum in _emf_metrics(event.get("message", "")) or []:
                backend.put_metric_data(ns, [datum])
    return answer


logs_responses.LogsResponse.put_log_events = put_log_events_emf


def _role_resource(self, role_name):
    try:
        return self.backend.get_role(role_name).arn
    except IamNotFound:
        return f"arn:aws:iam::{self.current_account}:role/{role_name}"


IamResponse._resolve_resource_arn = _role_resource
_iam_resource = IamResponse._determine_resource


def _linked_role_resource(self):
    # CreateServiceLinkedRole is checked against the role it makes (ECS's, the one agentbus asks for).
    if self.data.get("AWSServiceName") == ["ecs.amazonaws.com"]:
        return f"arn:aws:iam::{self.current_account}:role/aws-service-role/ecs.amazonaws.com/AWSServiceRoleForECS"
    return _iam_resource(self)


IamResponse._determine_resource = _linked_role_resource

def _queue_resource(self):
    name = self._get_param("QueueName") or self._get_queue_name()
    try:
        return self.sqs_backend.get_queue(name).queue_arn
    except QueueDoesNotExist:
        return f"arn:aws:sqs:{self.region}:{self.current_account}:{name}"


SQSResponse._determine_resource = _queue_resource

# Budgets' IAM actions are not its operations' names (Service Authorization Reference, AWS
# Budgets): reading a budget, its notifications and subscribers is ViewBudget, changing any of
# them ModifyBudget. moto checks the operation's name.
_BUDGET_ACTIONS = {
    "DescribeBudget": "ViewBudget",
    "DescribeBudgets": "ViewBudget",
    "DescribeNotificationsForBudget": "ViewBudget",
    "DescribeSubscribersForNotification": "ViewBudget",
    "CreateBudget": "ModifyBudget",
    "UpdateBudget": "ModifyBudget",
    "DeleteBudget": "ModifyBudget",
    "CreateNotification": "ModifyBudget",
    "UpdateNotification": "ModifyBudget",
    "DeleteNotification": "ModifyBudget",
    "CreateSubscriber": "ModifyBudget",
    "DeleteSubscriber": "ModifyBudget",
}
_iam_request_init = IAMRequestBase.__init__


def _iam_request(self, *args, **kwargs):
    _iam_request_init(self, *args, **kwargs)
    service, _, operation = self._action.partition(":")
    # CloudWatch signs as `monitoring`; its actions are `cloudwatch:*`.
    if service == "monitoring":
        self._action = f"cloudwatch:{operation}"
    if service == "budgets" and operation in _BUDGET_ACTIONS:
        self._action = f"budgets:{_BUDGET_ACTIONS[operation]}"


IAMRequestBase.__init__ = _iam_request

# S3's IAM actions for its bucket requests (Service Authorization Reference, Amazon S3, and the
# S3 User Guide's "Required permissions for Amazon S3 API operations"): HeadBucket needs
# ListBucket, the public access block s3:*BucketPublicAccessBlock, the default encryption
# s3:*EncryptionConfiguration, DeleteObjects s3:DeleteObject. moto names some of them otherwise
# and has no entry for the encryption and multi-object delete requests.
s3_responses.ACTION_MAP["BUCKET"]["HEAD"]["DEFAULT"] = "ListBucket"
s3_responses.ACTION_MAP["BUCKET"]["GET"]["public_access_block"] = "GetBucketPublicAccessBlock"
s3_responses.ACTION_MAP["BUCKET"]["PUT"]["public_access_block"] = "PutBucketPublicAccessBlock"
s3_responses.ACTION_MAP["BUCKET"]["DELETE"]["public_access_block"] = "PutBucketPublicAccessBlock"
s3_responses.ACTION_MAP["BUCKET"]["GET"]["encryption"] = "GetEncryptionConfiguration"
s3_responses.ACTION_MAP["BUCKET"]["PUT"]["encryption"] = "PutEncryptionConfiguration"
s3_responses.ACTION_MAP["BUCKET"]["DELETE"]["encryption"] = "PutEncryptionConfiguration"
s3_responses.ACTION_MAP["BUCKET"].setdefault("POST", {})["delete"] = "DeleteObject"

DomainDispatcherApplication.__call__ = _cbor_call

if __name__ == "__main__":
    main()
