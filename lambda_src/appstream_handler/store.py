"""The state store: a DynamoDB table that remembers what each resource claims, beyond one event.

Schema (one table, string keys ``pk`` and ``sk``, TTL attribute ``expires``):

===================================  ==============================  ==========================================
``pk``                               ``sk``                          what the item holds
===================================  ==============================  ==========================================
``A#<AppStream stack name>``         ``<auth type>#<user name>``     one association: ``claims`` (claimant →
                                                                     state, epoch, granted, keep), ``existed``,
                                                                     ``adopted``, ``ver``, ``wd``/``wd_until``
                                                                     while being withdrawn; tombstone (no
                                                                     claims) expires after a day
``S#<CloudFormation stack id>``      ``#stack``                      the stack's epochs: ``epoch``, ``committed``,
                                                                     ``rolled_back``, ``marker``
``S#<CloudFormation stack id>``      ``R#<logical id>``              one resource: ``owner``/``lease_until`` of
                                                                     the event holding it, ``busy_until``,
                                                                     ``answered`` (last 16 answers by
                                                                     RequestId), ``appstream_stacks``, ``path``
===================================  ==============================  ==========================================

A claimant is ``<stack id>|<logical id>``. Items stay small (an association item is well under
1 KB; a resource item holds at most 16 answers of at most ~400 bytes), far from DynamoDB's
400 KB. Every write is conditional: on the association's ``ver`` (optimistic concurrency between
resources and stacks), and on the resource's ``owner`` (a later event that took the resource
over, e.g. a rollback Delete while its cancelled Create still runs, stops the older one).

Reads are strongly consistent. Writes of association changes go in transactions of at most 100
actions, each with the owning resource's condition.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .decide import Call, Change
from .model import (
    Answered,
    Association,
    AssociationRecord,
    Claim,
    Claimant,
    EpochInfo,
    ResourceRecord,
    StackRecord,
)

logger = logging.getLogger(__name__)

TOMBSTONE_SECONDS = 86_400
"""How long the item of an association nothing claims any more is kept (then DynamoDB's TTL)."""
ANSWERS_KEPT = 16
"""Answers remembered per resource, for duplicate deliveries of the same RequestId."""
TRANSACTION_LIMIT = 100
"""Actions in one TransactWriteItems."""
_STACK_SK = "#stack"


class StoreError(Exception):
    """The state store could not be read or written; ``label`` is the error code."""

    def __init__(self, label: str, message: str = "") -> None:
        self.label = label
        self.message = message
        super().__init__(f"{label}: {message}" if message else label)


class Superseded(Exception):
    """Another event took this resource over; this one must stop changing anything."""


@dataclass
class Conflicts(Exception):
    """Some association records changed since they were read (their writes were not made)."""

    associations: list[Association] = field(default_factory=list)
    retry_all: bool = False
    """A transient conflict (another transaction on the same items): nothing was written."""


def association_key(association: Association) -> dict[str, Any]:
    """The DynamoDB key of an association's item."""
    return {
        "pk": {"S": f"A#{association.stack_name}"},
        "sk": {"S": f"{association.authentication_type}#{association.user_name}"},
    }


def stack_key(stack_id: str) -> dict[str, Any]:
    """The key of a CloudFormation stack's record."""
    return {"pk": {"S": f"S#{stack_id}"}, "sk": {"S": _STACK_SK}}


def resource_key(claimant: Claimant) -> dict[str, Any]:
    """The key of a resource's record."""
    return {"pk": {"S": f"S#{claimant.stack_id}"}, "sk": {"S": f"R#{claimant.logical_id}"}}


# -- (de)serialising --------------------------------------------------------------------------


def _n(value: Any, default: float = 0) -> float:
    if isinstance(value, Mapping) and "N" in value:
        return float(value["N"])
    return default


def _s(value: Any, default: str = "") -> str:
    if isinstance(value, Mapping) and "S" in value:
        return str(value["S"])
    return default


def _b(value: Any) -> bool:
    return bool(isinstance(value, Mapping) and value.get("BOOL"))


def claim_to_item(claim: Claim) -> dict[str, Any]:
    """A claim as a DynamoDB map."""
    return {
        "M": {
            "s": {"S": claim.state},
            "e": {"N": str(claim.epoch)},
            "g": {"BOOL": claim.granted},
            "k": {"BOOL": claim.keep_existing},
        }
    }


def claim_from_item(value: Mapping[str, Any]) -> Claim:
    """Inverse of :func:`claim_to_item`."""
    fields = value.get("M", {})
    return Claim(_s(fields.get("s"), "="), int(_n(fields.get("e"))), _b(fields.get("g")), _b(fields.get("k")))


def association_from_item(item: Mapping[str, Any]) -> AssociationRecord:
    """An association item as a record."""
    stack_name = _s(item.get("pk")).removeprefix("A#")
    auth, _, user = _s(item.get("sk")).partition("#")
    claims = {key: claim_from_item(value) for key, value in item.get("claims", {}).get("M", {}).items()}
    return AssociationRecord(
        association=Association(stack_name, user, auth),
        claims=claims,
        existed=_b(item.get("existed")),
        adopted=_b(item.get("adopted")),
        version=int(_n(item.get("ver"))),
        withdrawing=_s(item.get("wd")),
        withdraw_until=_n(item.get("wd_until")),
    )


def _answered_from_item(value: Mapping[str, Any]) -> Answered:
    fields = value.get("M", {})
    return Answered(_s(fields.get("t")), _s(fields.get("s")), _s(fields.get("p")), _s(fields.get("r")))


def resource_from_item(claimant: Claimant, item: Mapping[str, Any] | None) -> ResourceRecord:
    """A resource item (or its absence) as a record."""
    if not item:
        return ResourceRecord(claimant)
    answered = {key: _answered_from_item(value) for key, value in item.get("answered", {}).get("M", {}).items()}
    return ResourceRecord(
        claimant=claimant,
        version=int(_n(item.get("ver"))),
        owner=_s(item.get("owner")),
        owner_type=_s(item.get("owner_type")),
        lease_until=_n(item.get("lease_until")),
        busy_until=_n(item.get("busy_until")),
        answered=answered,
        appstream_stacks=frozenset(item.get("appstream_stacks", {}).get("SS", [])),
        physical_id=_s(item.get("physical_id")),
        path=_s(item.get("path")),
    )


def stack_from_item(stack_id: str, item: Mapping[str, Any] | None) -> StackRecord:
    """A stack item (or its absence) as a record."""
    if not item:
        return StackRecord(stack_id)
    rolled_back = frozenset(int(float(value)) for value in item.get("rolled_back", {}).get("NS", []))
    epochs = EpochInfo(int(_n(item.get("epoch"))), int(_n(item.get("committed"))), rolled_back)
    return StackRecord(
        stack_id=stack_id,
        version=int(_n(item.get("ver"))),
        epochs=epochs,
        marker=_s(item.get("marker")),
        deleted=_b(item.get("deleted")),
    )


@dataclass(frozen=True)
class StackState:
    """A CloudFormation stack's record and the records of its resources."""

    stack: StackRecord
    resources: Mapping[str, ResourceRecord]
    """By logical id."""

    def resource(self, claimant: Claimant) -> ResourceRecord:
        return self.resources.get(claimant.logical_id) or ResourceRecord(claimant)


class _Expression:
    """Builds one update expression with its placeholders."""

    def __init__(self) -> None:
        self.sets: list[str] = []
        self.removes: list[str] = []
        self.adds: list[str] = []
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}

    def name(self, text: str) -> str:
        for placeholder, existing in self.names.items():
            if existing == text:
                return placeholder
        placeholder = f"#n{len(self.names)}"
        self.names[placeholder] = text
        return placeholder

    def value(self, value: Any) -> str:
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = value
        return placeholder

    def update(self) -> str:
        parts = []
        if self.sets:
            parts.append("SET " + ", ".join(self.sets))
        if self.removes:
            parts.append("REMOVE " + ", ".join(self.removes))
        if self.adds:
            parts.append("ADD " + ", ".join(self.adds))
        return " ".join(parts)

    def action(self, table: str, key: Mapping[str, Any], condition: str) -> dict[str, Any]:
        action: dict[str, Any] = {
            "TableName": table,
            "Key": dict(key),
            "UpdateExpression": self.update(),
            "ConditionExpression": condition,
        }
        if self.names:
            action["ExpressionAttributeNames"] = self.names
        if self.values:
            action["ExpressionAttributeValues"] = self.values
        return action


def _version_condition(expr: _Expression, version: int) -> str:
    if version == 0:
        return "attribute_not_exists(pk)"
    return f"{expr.name('ver')} = {expr.value({'N': str(version)})}"


def _bump(expr: _Expression, version: int) -> None:
    ver = expr.name("ver")
    expr.sets.append(f"{ver} = {expr.value({'N': str(version + 1)})}")


def change_action(table: str, change: Change, now: float) -> dict[str, Any]:
    """The transaction action that records ``change`` (conditional on the record's version)."""
    expr = _Expression()
    record = change.record
    claims = expr.name("claims")
    if change.claim is not None:
        claim_value = claim_to_item(change.claim)
        if record.version == 0:
            expr.sets.append(f"{claims} = {expr.value({'M': {change.claimant.key: claim_value}})}")
        else:
            expr.sets.append(f"{claims}.{expr.name(change.claimant.key)} = {expr.value(claim_value)}")
        expr.removes.append(expr.name("expires"))
    else:
        expr.removes.append(f"{claims}.{expr.name(change.claimant.key)}")
    association = change.association
    expr.sets.append(f"{expr.name('stack')} = {expr.value({'S': association.stack_name})}")
    expr.sets.append(f"{expr.name('user')} = {expr.value({'S': association.user_name})}")
    expr.sets.append(f"{expr.name('auth')} = {expr.value({'S': association.authentication_type})}")
    if change.last:
        for name in ("existed", "adopted"):
            expr.removes.append(expr.name(name))
        expr.sets.append(f"{expr.name('expires')} = {expr.value({'N': str(int(now) + TOMBSTONE_SECONDS)})}")
    if change.existed is not None:
        expr.sets.append(f"{expr.name('existed')} = {expr.value({'BOOL': change.existed})}")
    if change.adopted:
        expr.sets.append(f"{expr.name('adopted')} = {expr.value({'BOOL': True})}")
    _bump(expr, record.version)
    return expr.action(table, association_key(association), _version_condition(expr, record.version))


def lock_action(table: str, change: Change, until: float) -> dict[str, Any]:
    """Mark an association as being withdrawn by ``change``'s claimant (its claim stays until done)."""
    expr = _Expression()
    expr.sets.append(f"{expr.name('wd')} = {expr.value({'S': change.claimant.key})}")
    expr.sets.append(f"{expr.name('wd_until')} = {expr.value({'N': repr(until)})}")
    _bump(expr, change.record.version)
    return expr.action(table, association_key(change.association), _version_condition(expr, change.record.version))


def unlock_action(table: str, change: Change, version: int, *, withdrawn: bool, now: float) -> dict[str, Any]:
    """End a withdrawal: drop the claim (withdrawn) or keep it (the call failed); clear the mark."""
    expr = _Expression()
    expr.removes += [expr.name("wd"), expr.name("wd_until")]
    if withdrawn:
        expr.removes.append(f"{expr.name('claims')}.{expr.name(change.claimant.key)}")
        if change.last:
            expr.removes += [expr.name("existed"), expr.name("adopted")]
            expr.sets.append(f"{expr.name('expires')} = {expr.value({'N': str(int(now) + TOMBSTONE_SECONDS)})}")
    _bump(expr, version)
    condition = f"{expr.name('wd')} = {expr.value({'S': change.claimant.key})}"
    return expr.action(table, association_key(change.association), condition)


def _hold(expr: _Expression, owner: Owner) -> str:
    """SET the owner's hold on a resource item; return the condition (the version read)."""
    expr.sets.append(f"{expr.name('owner')} = {expr.value({'S': owner.request_id})}")
    expr.sets.append(f"{expr.name('owner_type')} = {expr.value({'S': owner.request_type})}")
    expr.sets.append(f"{expr.name('lease_until')} = {expr.value({'N': repr(owner.lease_until)})}")
    if owner.path:
        expr.sets.append(f"{expr.name('path')} = {expr.value({'S': owner.path})}")
    if owner.version == 0:
        expr.sets.append(f"{expr.name('answered')} = {expr.value({'M': {}})}")
    _bump(expr, owner.version)
    return _version_condition(expr, owner.version)


@dataclass
class Owner:
    """The resource an event acts for, and its hold on the resource's record."""

    claimant: Claimant
    request_id: str
    request_type: str
    lease_until: float
    version: int
    """The record's version the next lease-taking write is conditional on (when not yet held)."""
    held: bool = False
    path: str = ""

    def action(self, table: str, *, busy_until: float, stacks: Iterable[str]) -> dict[str, Any]:
        """Take or keep the hold on the resource in the same transaction as association writes."""
        expr = _Expression()
        expr.sets.append(f"{expr.name('busy_until')} = {expr.value({'N': repr(busy_until)})}")
        names = sorted(set(stacks))
        if names:
            expr.adds.append(f"{expr.name('appstream_stacks')} {expr.value({'SS': names})}")
        condition = f"{expr.name('owner')} = {expr.value({'S': self.request_id})}" if self.held else _hold(expr, self)
        return expr.action(table, resource_key(self.claimant), condition)


class StateStore:
    """Reads and writes the state table through an injected DynamoDB client."""

    def __init__(self, client: Any, table: str, *, clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self.table = table
        self._clock = clock
        self.calls: dict[str, int] = {}

    def _call(self, operation: str, **kwargs: Any) -> Any:
        self.calls[operation] = self.calls.get(operation, 0) + 1
        try:
            return getattr(self._client, operation)(TableName=self.table, **kwargs)
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", "ClientError"))
            if code in ("TransactionCanceledException", "ConditionalCheckFailedException"):
                raise
            raise StoreError(code, str(error.response.get("Error", {}).get("Message", ""))) from None
        except BotoCoreError as error:
            raise StoreError(type(error).__name__, "could not reach DynamoDB") from None

    # -- reading --------------------------------------------------------------------------

    def _query(self, pk: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        start: dict[str, Any] | None = None
        while True:
            kwargs: dict[str, Any] = {
                "KeyConditionExpression": "pk = :pk",
                "ExpressionAttributeValues": {":pk": {"S": pk}},
                "ConsistentRead": True,
            }
            if start:
                kwargs["ExclusiveStartKey"] = start
            page = self._call("query", **kwargs)
            items.extend(page.get("Items", []))
            start = page.get("LastEvaluatedKey")
            if not start:
                return items

    def load_stack(self, stack_id: str) -> StackState:
        """The stack's record and its resources' records (one Query)."""
        stack: StackRecord = StackRecord(stack_id)
        resources: dict[str, ResourceRecord] = {}
        for item in self._query(f"S#{stack_id}"):
            sk = _s(item.get("sk"))
            if sk == _STACK_SK:
                stack = stack_from_item(stack_id, item)
            elif sk.startswith("R#"):
                logical_id = sk.removeprefix("R#")
                resources[logical_id] = resource_from_item(Claimant(stack_id, logical_id), item)
        return StackState(stack, resources)

    def load_resource(self, claimant: Claimant) -> ResourceRecord:
        """One resource's record (strongly consistent)."""
        response = self._call("get_item", Key=resource_key(claimant), ConsistentRead=True)
        return resource_from_item(claimant, response.get("Item"))

    def load_associations(self, stack_names: Iterable[str]) -> dict[Association, AssociationRecord]:
        """Every association record of the given AppStream stacks (one Query per stack and MB)."""
        found: dict[Association, AssociationRecord] = {}
        for name in sorted(set(stack_names)):
            for item in self._query(f"A#{name}"):
                record = association_from_item(item)
                found[record.association] = record
        return found

    def reload(self, associations: Sequence[Association]) -> dict[Association, AssociationRecord]:
        """Fresh records of some associations (after a conflict), 100 keys per call."""
        found: dict[Association, AssociationRecord] = {}
        keys = [association_key(item) for item in associations]
        for start in range(0, len(keys), 100):
            pending: list[dict[str, Any]] = keys[start : start + 100]
            for _ in range(8):
                response = self._client_batch_get(pending)
                for item in response.get("Responses", {}).get(self.table, []):
                    record = association_from_item(item)
                    found[record.association] = record
                pending = response.get("UnprocessedKeys", {}).get(self.table, {}).get("Keys", [])
                if not pending:
                    break
        return found

    def _client_batch_get(self, keys: list[dict[str, Any]]) -> Any:
        self.calls["batch_get_item"] = self.calls.get("batch_get_item", 0) + 1
        try:
            return self._client.batch_get_item(RequestItems={self.table: {"Keys": keys, "ConsistentRead": True}})
        except ClientError as error:
            raise StoreError(str(error.response.get("Error", {}).get("Code", "ClientError"))) from None
        except BotoCoreError as error:
            raise StoreError(type(error).__name__, "could not reach DynamoDB") from None

    # -- holding a resource -------------------------------------------------------------------

    def take_over(self, owner: Owner) -> None:
        """Take the resource now (before reading its claims); raise Conflicts if it moved meanwhile."""
        expr = _Expression()
        condition = _hold(expr, owner)
        action = expr.action(self.table, resource_key(owner.claimant), condition)
        action.pop("TableName")
        try:
            self._call("update_item", **action)
        except ClientError as error:
            raise Conflicts(retry_all=True) from error
        owner.held = True
        owner.version += 1

    # -- writing changes ------------------------------------------------------------------------

    def write(self, owner: Owner, actions: list[dict[str, Any]], *, busy_until: float, stacks: Iterable[str]) -> None:
        """Write association actions and the owner's hold in one transaction.

        :raises Superseded: another event holds the resource now (nothing was written).
        :raises Conflicts: records changed since they were read (nothing was written).
        """
        if len(actions) + 1 > TRANSACTION_LIMIT:
            raise ValueError("too many actions for one transaction")
        items = [{"Update": owner.action(self.table, busy_until=busy_until, stacks=stacks)}]
        items += [{"Update": action} for action in actions]
        self.calls["transact_write_items"] = self.calls.get("transact_write_items", 0) + 1
        try:
            self._client.transact_write_items(TransactItems=items)
        except ClientError as error:
            self._raise_cancelled(error, items)
        except BotoCoreError as error:
            raise StoreError(type(error).__name__, "could not reach DynamoDB") from None
        owner.held = True

    def _raise_cancelled(self, error: ClientError, items: list[dict[str, Any]]) -> None:
        code = str(error.response.get("Error", {}).get("Code", "ClientError"))
        if code != "TransactionCanceledException":
            raise StoreError(code, str(error.response.get("Error", {}).get("Message", ""))) from None
        reasons = error.response.get("CancellationReasons") or []
        codes = [str(reason.get("Code", "None")) for reason in reasons]
        if codes and codes[0] == "ConditionalCheckFailed":
            raise Superseded() from None
        if any(code in ("TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded") for code in codes):
            raise Conflicts(retry_all=True) from None
        failed = []
        for code_, item in zip(codes, items, strict=False):
            if code_ == "ConditionalCheckFailed" and item is not items[0]:
                key = item["Update"]["Key"]
                stack_name = key["pk"]["S"].removeprefix("A#")
                auth, _, user = key["sk"]["S"].partition("#")
                failed.append(Association(stack_name, user, auth))
        if not failed:
            raise Conflicts(retry_all=True) from None
        raise Conflicts(failed) from None

    def finish(
        self,
        owner: Owner,
        answer: Answered,
        record: ResourceRecord,
        *,
        actions: Sequence[dict[str, Any]] = (),
    ) -> None:
        """Remember the answer, release the resource if still held, and write trailing actions.

        :raises Superseded: the resource was taken over meanwhile (the answer is still remembered).
        """
        now = self._clock()
        value = {
            "M": {
                "t": {"S": answer.request_type},
                "s": {"S": answer.status},
                "p": {"S": answer.physical_id},
                "r": {"S": answer.reason},
                "at": {"N": repr(now)},
            }
        }
        expr = _Expression()
        answered = expr.name("answered")
        creating = not owner.held and record.version == 0
        if creating:
            expr.sets.append(f"{answered} = {expr.value({'M': {owner.request_id: value}})}")
            expr.sets.append(f"{expr.name('ver')} = {expr.value({'N': '1'})}")
            if owner.path:
                expr.sets.append(f"{expr.name('path')} = {expr.value({'S': owner.path})}")
            condition = "attribute_not_exists(pk)"
        else:
            expr.sets.append(f"{answered}.{expr.name(owner.request_id)} = {expr.value(value)}")
            for old in list(record.answered)[: max(0, len(record.answered) + 1 - ANSWERS_KEPT)]:
                if old != owner.request_id:
                    expr.removes.append(f"{answered}.{expr.name(old)}")
            condition = "attribute_exists(pk)"
        if answer.physical_id:
            expr.sets.append(f"{expr.name('physical_id')} = {expr.value({'S': answer.physical_id})}")
        if owner.held:
            owner_name = expr.name("owner")
            expr.removes += [owner_name, expr.name("lease_until"), expr.name("busy_until")]
            condition = f"{owner_name} = {expr.value({'S': owner.request_id})}"
        action = expr.action(self.table, resource_key(owner.claimant), condition)
        try:
            if actions:
                items = [{"Update": action}, *({"Update": extra} for extra in actions)]
                self.calls["transact_write_items"] = self.calls.get("transact_write_items", 0) + 1
                self._client.transact_write_items(TransactItems=items)
            else:
                action.pop("TableName")
                self._call("update_item", **action)
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", "ClientError"))
            if code not in ("ConditionalCheckFailedException", "TransactionCanceledException"):
                raise StoreError(code) from None
            if not owner.held:
                # The item appeared (or vanished) under us: remember the answer against what is there.
                fresh = self.load_resource(owner.claimant)
                if fresh.version != record.version:
                    self.finish(owner, answer, fresh, actions=actions)
                    return
            owner.held = False
            raise Superseded() from None
        except BotoCoreError as error:
            raise StoreError(type(error).__name__, "could not reach DynamoDB") from None
        owner.held = False

    # -- the stack's epochs -------------------------------------------------------------------------

    def write_stack(self, record: StackRecord, *, epoch: int, committed: int, marker: str) -> StackRecord:
        """Start or settle epochs (conditional on the record's version)."""
        expr = _Expression()
        expr.sets.append(f"{expr.name('epoch')} = {expr.value({'N': str(epoch)})}")
        expr.sets.append(f"{expr.name('committed')} = {expr.value({'N': str(committed)})}")
        expr.sets.append(f"{expr.name('marker')} = {expr.value({'S': marker})}")
        _bump(expr, record.version)
        action = expr.action(self.table, stack_key(record.stack_id), _version_condition(expr, record.version))
        action.pop("TableName")
        try:
            self._call("update_item", **action)
        except ClientError as error:
            raise Conflicts(retry_all=True) from error
        epochs = EpochInfo(epoch, committed, record.epochs.rolled_back)
        return StackRecord(record.stack_id, record.version + 1, epochs, marker, record.deleted)

    def mark_rolled_back(self, stack_id: str, epoch: int) -> None:
        """Record that ``epoch`` rolled back (idempotent)."""
        expr = _Expression()
        expr.adds.append(f"{expr.name('rolled_back')} {expr.value({'NS': [str(epoch)]})}")
        ver = expr.name("ver")
        expr.sets.append(f"{ver} = if_not_exists({ver}, {expr.value({'N': '0'})}) + {expr.value({'N': '1'})}")
        action = expr.action(self.table, stack_key(stack_id), "attribute_exists(pk) OR attribute_not_exists(pk)")
        action.pop("TableName")
        self._call("update_item", **action)

    def mark_deleted(self, stack_id: str) -> None:
        """The stack is gone: its record expires."""
        expr = _Expression()
        expr.sets.append(f"{expr.name('deleted')} = {expr.value({'BOOL': True})}")
        expr.sets.append(f"{expr.name('expires')} = {expr.value({'N': str(int(self._clock()) + TOMBSTONE_SECONDS)})}")
        action = expr.action(self.table, stack_key(stack_id), "attribute_exists(pk) OR attribute_not_exists(pk)")
        action.pop("TableName")
        self._call("update_item", **action)


def call_stacks(changes: Iterable[Change]) -> frozenset[str]:
    """The AppStream stacks of some changes."""
    return frozenset(change.association.stack_name for change in changes)


def needs_call(change: Change) -> bool:
    """True when the change needs an AppStream call."""
    return change.call is not Call.NONE
