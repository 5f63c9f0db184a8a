"""The caption fidelity report: does each pipeline stage make captions more faithful? (docs/methods.md#urbanln)

For raw, refined, consensus-selected and randomly selected captions: object precision
(1 − hallucination rate) and recall against the twin's scene graphs (``fidelity.object_precision_recall``,
text only) and mean length in CLIP tokens, plus the pipeline's per-stage speed. Raw and refined
rows average over every candidate; "selected (random)" is the "w/o Consensus" ablation's seeded
choice among the same refined candidates, so the two selection rows differ only in how they choose.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from urbanln_bench.captions.pipeline import CaptionRun, PipelineConfig, Progress, run_pipeline
from urbanln_bench.errors import UserError


@dataclass(frozen=True)
class FidelityRow:
    stage: str
    n_captions: int
    object_precision: float
    object_recall: float
    clip_tokens: float


@dataclass
class FidelityReport:
    city: str
    imagery: str
    key: str
    folder: str
    reused: bool
    rows: list[FidelityRow]
    phrases: dict[str, float] = field(default_factory=dict)
    speed: dict[str, Any] = field(default_factory=dict)
    seconds_total: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def fidelity_row(stage: str, records: list[dict[str, Any]], graphs: dict[str, dict]) -> FidelityRow:
    from urbanln_bench.captions.fidelity import clip_token_length, object_precision_recall

    scores = np.array([object_precision_recall(r["caption"], graphs[r["image_id"]]) for r in records])
    tokens = [clip_token_length(r["caption"]) for r in records]
    return FidelityRow(stage, len(records), round(float(scores[:, 0].mean()), 4), round(float(scores[:, 1].mean()), 4),
                       round(float(np.mean(tokens)), 1))


def phrase_statistics(refined: list[dict[str, Any]]) -> dict[str, float]:
    """How many phrases the refinement judged and what share it kept."""
    decisions = [p for r in refined for p in r.get("phrases", ())]
    if not decisions:
        return {}
    return {"judged": len(decisions), "kept_share": round(sum(bool(p[2]) for p in decisions) / len(decisions), 4)}


def fidelity_report(city: Any, config: PipelineConfig = PipelineConfig(), progress: Progress | None = None
                    ) -> FidelityReport:
    """Run (or reuse) the pipeline on a synthetic twin and score every stage against its scene graphs."""
    from urbanln_bench.captions.consensus import random_index

    if city.source != "synthetic":
        raise UserError(f"{city.root}: the fidelity report needs ground-truth scene graphs, which synthetic twins "
                        f"alone have (this data is {city.source}); use --city with a twin")
    run: CaptionRun = run_pipeline(city, config, progress)
    graphs = city.scene_graphs(config.imagery)
    raw, refined, selected = run.read("raw"), run.read("refined"), run.read("selected")
    by_image: dict[str, list[dict[str, Any]]] = {}
    for record in refined:
        by_image.setdefault(record["image_id"], []).append(record)
    randomly = [cands[random_index(len(cands), image_id, config.seed)] for image_id, cands in by_image.items()]
    selection = selected[0]["selection"] if selected else "consensus"
    rows = [fidelity_row("raw", raw, graphs)]
    if config.refinement:
        rows.append(fidelity_row("refined", refined, graphs))
    rows.append(fidelity_row(f"selected ({selection})", selected, graphs))
    if selection != "random":
        rows.append(fidelity_row("selected (random)", randomly, graphs))
    return FidelityReport(city.name, config.imagery, run.key, str(run.folder), run.reused, rows,
                          phrase_statistics(refined), run.info.get("speed", {}), run.info.get("seconds_total", 0.0))
