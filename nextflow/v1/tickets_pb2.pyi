import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from nextflow.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Ticket(_message.Message):
    __slots__ = ("id", "customer_id", "contact_id", "subject", "description", "priority", "status", "queue_id", "assignee_id", "channel", "tags", "requester_id", "first_response_at", "resolved_at", "closed_at", "first_response_due_at", "resolution_due_at", "sla_paused_at", "sla_paused_s", "first_response_breached", "resolution_breached", "sla_breached", "version", "created_at", "updated_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    CONTACT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_ID_FIELD_NUMBER: _ClassVar[int]
    ASSIGNEE_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_ID_FIELD_NUMBER: _ClassVar[int]
    FIRST_RESPONSE_AT_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_AT_FIELD_NUMBER: _ClassVar[int]
    CLOSED_AT_FIELD_NUMBER: _ClassVar[int]
    FIRST_RESPONSE_DUE_AT_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_DUE_AT_FIELD_NUMBER: _ClassVar[int]
    SLA_PAUSED_AT_FIELD_NUMBER: _ClassVar[int]
    SLA_PAUSED_S_FIELD_NUMBER: _ClassVar[int]
    FIRST_RESPONSE_BREACHED_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_BREACHED_FIELD_NUMBER: _ClassVar[int]
    SLA_BREACHED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: int
    customer_id: int
    contact_id: int
    subject: str
    description: str
    priority: str
    status: str
    queue_id: int
    assignee_id: int
    channel: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    requester_id: int
    first_response_at: _timestamp_pb2.Timestamp
    resolved_at: _timestamp_pb2.Timestamp
    closed_at: _timestamp_pb2.Timestamp
    first_response_due_at: _timestamp_pb2.Timestamp
    resolution_due_at: _timestamp_pb2.Timestamp
    sla_paused_at: _timestamp_pb2.Timestamp
    sla_paused_s: float
    first_response_breached: bool
    resolution_breached: bool
    sla_breached: bool
    version: int
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[int] = ..., customer_id: _Optional[int] = ..., contact_id: _Optional[int] = ..., subject: _Optional[str] = ..., description: _Optional[str] = ..., priority: _Optional[str] = ..., status: _Optional[str] = ..., queue_id: _Optional[int] = ..., assignee_id: _Optional[int] = ..., channel: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., requester_id: _Optional[int] = ..., first_response_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., resolved_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., closed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., first_response_due_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., resolution_due_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sla_paused_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sla_paused_s: _Optional[float] = ..., first_response_breached: _Optional[bool] = ..., resolution_breached: _Optional[bool] = ..., sla_breached: _Optional[bool] = ..., version: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetTicketRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class ListTicketsResponse(_message.Message):
    __slots__ = ("data", "next_cursor", "total")
    DATA_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    data: _containers.RepeatedCompositeFieldContainer[Ticket]
    next_cursor: str
    total: int
    def __init__(self, data: _Optional[_Iterable[_Union[Ticket, _Mapping]]] = ..., next_cursor: _Optional[str] = ..., total: _Optional[int] = ...) -> None: ...

class CreateTicketRequest(_message.Message):
    __slots__ = ("customer_id", "contact_id", "subject", "description", "priority", "channel", "tags", "queue_id", "assignee_id")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    CONTACT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_ID_FIELD_NUMBER: _ClassVar[int]
    ASSIGNEE_ID_FIELD_NUMBER: _ClassVar[int]
    customer_id: int
    contact_id: int
    subject: str
    description: str
    priority: str
    channel: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    queue_id: int
    assignee_id: int
    def __init__(self, customer_id: _Optional[int] = ..., contact_id: _Optional[int] = ..., subject: _Optional[str] = ..., description: _Optional[str] = ..., priority: _Optional[str] = ..., channel: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., queue_id: _Optional[int] = ..., assignee_id: _Optional[int] = ...) -> None: ...
