import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from nextflow.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Deal(_message.Message):
    __slots__ = ("id", "customer_id", "contact_id", "name", "amount", "weighted_amount", "pipeline_id", "stage_id", "probability", "status", "close_reason", "closed_at", "owner_id", "expected_close_date", "source_key", "stage_entered_at", "version", "created_at", "updated_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    CONTACT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    WEIGHTED_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_ID_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CLOSE_REASON_FIELD_NUMBER: _ClassVar[int]
    CLOSED_AT_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_CLOSE_DATE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_KEY_FIELD_NUMBER: _ClassVar[int]
    STAGE_ENTERED_AT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: int
    customer_id: int
    contact_id: int
    name: str
    amount: _common_pb2.Money
    weighted_amount: _common_pb2.Money
    pipeline_id: int
    stage_id: int
    probability: int
    status: str
    close_reason: str
    closed_at: _timestamp_pb2.Timestamp
    owner_id: int
    expected_close_date: str
    source_key: str
    stage_entered_at: _timestamp_pb2.Timestamp
    version: int
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[int] = ..., customer_id: _Optional[int] = ..., contact_id: _Optional[int] = ..., name: _Optional[str] = ..., amount: _Optional[_Union[_common_pb2.Money, _Mapping]] = ..., weighted_amount: _Optional[_Union[_common_pb2.Money, _Mapping]] = ..., pipeline_id: _Optional[int] = ..., stage_id: _Optional[int] = ..., probability: _Optional[int] = ..., status: _Optional[str] = ..., close_reason: _Optional[str] = ..., closed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., owner_id: _Optional[int] = ..., expected_close_date: _Optional[str] = ..., source_key: _Optional[str] = ..., stage_entered_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., version: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetDealRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class ListDealsResponse(_message.Message):
    __slots__ = ("data", "next_cursor", "total")
    DATA_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    data: _containers.RepeatedCompositeFieldContainer[Deal]
    next_cursor: str
    total: int
    def __init__(self, data: _Optional[_Iterable[_Union[Deal, _Mapping]]] = ..., next_cursor: _Optional[str] = ..., total: _Optional[int] = ...) -> None: ...

class CreateDealRequest(_message.Message):
    __slots__ = ("customer_id", "contact_id", "name", "amount", "pipeline_id", "stage_id", "probability", "owner_id", "expected_close_date")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    CONTACT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_ID_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_CLOSE_DATE_FIELD_NUMBER: _ClassVar[int]
    customer_id: int
    contact_id: int
    name: str
    amount: _common_pb2.Money
    pipeline_id: int
    stage_id: int
    probability: int
    owner_id: int
    expected_close_date: str
    def __init__(self, customer_id: _Optional[int] = ..., contact_id: _Optional[int] = ..., name: _Optional[str] = ..., amount: _Optional[_Union[_common_pb2.Money, _Mapping]] = ..., pipeline_id: _Optional[int] = ..., stage_id: _Optional[int] = ..., probability: _Optional[int] = ..., owner_id: _Optional[int] = ..., expected_close_date: _Optional[str] = ...) -> None: ...

class MoveDealStageRequest(_message.Message):
    __slots__ = ("id", "stage_id", "probability")
    ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_ID_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    id: int
    stage_id: int
    probability: int
    def __init__(self, id: _Optional[int] = ..., stage_id: _Optional[int] = ..., probability: _Optional[int] = ...) -> None: ...
