"""The one scoring step every route shares: the Scorer inline or in the threadpool, then metrics."""

from dataclasses import dataclass

import numpy as np
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from app import metrics
from app.model import Scorer, Scores

# ONNX scores a few rows in microseconds: cheaper inline than a threadpool hop. Anything slower
# (scikit-learn, big batches) runs in the threadpool so the event loop keeps serving.
INLINE_ROWS = 64


@dataclass(frozen=True)
class Explain:
    """The `explain` and `max_reasons` query parameters of a scoring route."""

    enabled: bool = False
    max_reasons: int = 3


NO_EXPLAIN = Explain()


def require_explainable(scorer: Scorer, explain: Explain) -> None:
    """422 for `explain=true` when the served model carries no reason codes."""
    if explain.enabled and not scorer.explains:
        raise RequestValidationError(
            [
                {
                    "loc": ("query", "explain"),
                    "msg": "the served model carries no reason codes (an .onnx exported without "
                    "them): serve its .joblib or retrain to explain",
                    "type": "explain_unavailable",
                }
            ]
        )


async def score(
    request: Request,
    scorer: Scorer,
    matrix: np.ndarray,
    explain: Explain = NO_EXPLAIN,
    *,
    batch: bool,
) -> Scores:
    """Score validated rows, count them in the metrics, and note the call in the request's log."""
    require_explainable(scorer, explain)
    if scorer.engine.name == "onnx" and len(matrix) <= INLINE_ROWS:
        scores = scorer.score(matrix, explain=explain.enabled)
    else:
        scores = await run_in_threadpool(scorer.score, matrix, explain=explain.enabled)
    metrics.observe_scores(scores)
    request.state.model_version = scorer.version
    if batch:
        request.state.transactions = len(scores)
    else:
        request.state.score_bucket = int(scores.fraud_score[0]) // 10 * 10
    return scores
