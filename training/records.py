"""The one metric record of every result (trainer, `python -m training evaluate`, baselines): figures,
what was ranked and how, labelled by the one protocol rule (`model_store.bundle.Protocol.label`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from model_store.bundle import Protocol

Task = Literal["direct", "sequential"]


class Figures(BaseModel):
    """HR@5/10 and NDCG@5/10, written with their usual names (`hr@10`, ...)."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    hr5: float = Field(alias="hr@5", ge=0.0, le=1.0)
    ndcg5: float = Field(alias="ndcg@5", ge=0.0, le=1.0)
    hr10: float = Field(alias="hr@10", ge=0.0, le=1.0)
    ndcg10: float = Field(alias="ndcg@10", ge=0.0, le=1.0)


class ProtocolRecord(BaseModel):
    """The protocol of a result with its label; `omega` names the Ω kind of an ELMRec result."""

    model_config = ConfigDict(extra="forbid")

    id_scheme: str
    graph: str
    split: str
    seed: int
    label: str
    omega: str | None = None

    @classmethod
    def of(cls, protocol: Protocol, omega: str | None = None) -> ProtocolRecord:
        return cls(**protocol.model_dump(), label=protocol.label, omega=omega)


class MetricRecord(Figures):
    """One method on one dataset, task and split. Sequential headline figures are history-filtered
    (`unfiltered` beside them); method-specific details (tuned settings, fit report) are extra fields."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")

    method: str
    preset: str | None = None
    dataset: str
    task: Task
    split: Literal["valid", "test"]
    seed: int
    users: int = Field(ge=0)
    device: str
    seconds: float | None = None
    protocol: ProtocolRecord
    unfiltered: Figures | None = None

    def dump(self) -> dict[str, Any]:
        """The JSON object of this record (`hr@10` names; unset optional parts left out)."""
        out = self.model_dump(by_alias=True)
        if out["unfiltered"] is None:
            del out["unfiltered"]
        if out["protocol"]["omega"] is None:
            del out["protocol"]["omega"]
        return out
