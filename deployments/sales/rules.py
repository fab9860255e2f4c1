"""Pure deal rules: weighted amounts and which stage transitions are allowed.

A deal's status follows the kind of its stage: `open` stages hold open deals, a
`won` stage a won deal, a `lost` stage a lost one. Moving a deal to a won or lost
stage is only done by `won()` / `lost()` (POST /deals/{id}/won|lost), so a lost deal
always has its reason and `closed_at`; `move()` (a stage or a pipeline change)
refuses won/lost stages with a 422 naming `stage_id`. A closed deal changes stage only
by `reopen()` first (409 otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from deployments.sales.schemas import DealRead, PipelineRead, StageRead
from gateway.errors import Conflict, Validation


def weighted_amount(amount: Decimal, probability: int) -> Decimal:
    """amount x probability / 100, exact (amounts have at most 4 decimals and 18
    digits, so the quotient always fits the default 28-digit context)."""
    if not 0 <= probability <= 100:
        raise ValueError("probability is 0-100")
    return amount * probability / Decimal(100)


@dataclass(frozen=True)
class Transition:
    """What a stage change writes: the target and the deal's resulting state."""

    pipeline_id: int
    stage_id: int
    probability: int
    status: str
    close_reason: str | None


def _invalid(field: str, message: str) -> Validation:
    return Validation(message, [{"field": field, "message": message}])


def _require_open(deal: DealRead) -> None:
    if deal.status != "open":
        raise Conflict(f"deal {deal.id} is {deal.status}; reopen it first")


def move(
    deal: DealRead, pipeline: PipelineRead, stage_id: int, probability: int | None = None
) -> Transition:
    """An open deal to an open stage of `pipeline` (its own, or another: a pipeline
    move); the probability defaults to the stage's."""
    _require_open(deal)
    stage = pipeline.stage(stage_id)
    if stage is None:
        raise _invalid("stage_id", f"stage {stage_id} is not a stage of pipeline {pipeline.id}")
    return _to_open_stage(stage, probability)


def _to_open_stage(stage: StageRead, probability: int | None) -> Transition:
    if stage.kind != "open":
        raise _invalid(
            "stage_id",
            f"stage {stage.id} is a {stage.kind} stage: use POST /deals/{{id}}/{stage.kind}",
        )
    chosen = stage.probability if probability is None else probability
    return Transition(stage.pipeline_id, stage.id, chosen, "open", None)


def won(deal: DealRead, pipeline: PipelineRead, reason: str | None) -> Transition:
    return _close(deal, pipeline, "won", reason)


def lost(deal: DealRead, pipeline: PipelineRead, reason: str) -> Transition:
    if not reason or not reason.strip():
        raise _invalid("reason", "a lost deal needs a reason")
    return _close(deal, pipeline, "lost", reason)


def _close(deal: DealRead, pipeline: PipelineRead, kind: str, reason: str | None) -> Transition:
    _require_open(deal)
    stage = pipeline.first(kind)
    if stage is None:
        raise Conflict(f"pipeline {pipeline.id} has no {kind} stage")
    return Transition(pipeline.id, stage.id, stage.probability, kind, reason)


def reopen(deal: DealRead, pipeline: PipelineRead, previous_stage_id: int | None) -> Transition:
    """A won or lost deal back to the open stage it left (or the pipeline's first open
    stage when that one is gone or no longer open); probability from that stage."""
    if deal.status == "open":
        raise Conflict(f"deal {deal.id} is already open")
    stage = pipeline.stage(previous_stage_id) if previous_stage_id is not None else None
    if stage is None or stage.kind != "open":
        stage = pipeline.first("open")
    if stage is None:
        raise Conflict(f"pipeline {pipeline.id} has no open stage")
    return Transition(pipeline.id, stage.id, stage.probability, "open", None)


def initial_stage(pipeline: PipelineRead, stage_id: int | None) -> StageRead:
    """Where a new deal starts: the given open stage of the pipeline, or its first."""
    if stage_id is None:
        stage = pipeline.first("open")
        if stage is None:
            raise _invalid("pipeline_id", f"pipeline {pipeline.id} has no open stage")
        return stage
    stage = pipeline.stage(stage_id)
    if stage is None:
        raise _invalid("stage_id", f"stage {stage_id} is not a stage of pipeline {pipeline.id}")
    if stage.kind != "open":
        raise _invalid("stage_id", "a new deal starts in an open stage")
    return stage
