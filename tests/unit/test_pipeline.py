"""The request pipeline without Ray or HTTP: plan → fan out → assemble, with predict coroutines
that run the real model core on tiny real ONNX models in process."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError

from deployments.runtime.answers import FailedRows, ItemError, ModelAnswer
from deployments.runtime.rows import TokenRows
from serve_app import admission
from serve_app.errors import (
    ModelFailureError,
    ModelsNotReadyError,
    OverloadedError,
    PayloadTooLargeError,
    RequestTimeoutError,
)
from serve_app.events import StartEvent, WindowEvent
from serve_app.model_client import ModelClient
from serve_app.pipeline import Outcome, Pipeline
from serve_app.plan import Planner, PlanSettings, ServedModel
from serve_app.results import assemble
from serve_app.schemas import Task
from tests.support import fake_ingress

SETTINGS = PlanSettings()


class FakeModels(fake_ingress.FakeModels):
    """Predict coroutines over the real model core, recording every call they answer; a
    ``gate`` holds every call until it is set."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.calls: dict[str, list[int]] = {"ner": [], "sentiment": []}
        self.gate: asyncio.Event | None = None

    async def predict_ner(self, rows: TokenRows) -> Any:
        self.calls["ner"].append(len(rows))
        await self._gate()
        return await super().predict_ner(rows)

    async def predict_sentiment(self, rows: TokenRows) -> Any:
        self.calls["sentiment"].append(len(rows))
        await self._gate()
        return await super().predict_sentiment(rows)

    async def _gate(self) -> None:
        if self.gate is not None:
            await self.gate.wait()

    def served(self) -> dict[Task, ServedModel]:
        return {
            "ner": ServedModel.from_dir(str(self.ner_dir)),
            "sentiment": ServedModel.from_dir(str(self.sentiment_dir)),
        }

    def pipeline(
        self,
        *,
        group_size: int = 16,
        calls_in_flight: int = 2,
        ner: Callable[[TokenRows], Awaitable[Any]] | None = None,
        sentiment: Callable[[TokenRows], Awaitable[Any]] | None = None,
        refusal_backoff_s: tuple[float, ...] = (0.25, 0.05, 0.05),
    ) -> Pipeline:
        clients: dict[Task, ModelClient] = {
            task: ModelClient(
                call, group_size=group_size, calls_in_flight=calls_in_flight, refusal_backoff_s=refusal_backoff_s
            )
            for task, call in (("ner", ner or self.predict_ner), ("sentiment", sentiment or self.predict_sentiment))
        }
        return Pipeline(Planner(self.served()), clients)


@pytest.fixture
def models(tmp_path: Path) -> FakeModels:
    return FakeModels(tmp_path)


async def analyze(pipeline: Pipeline, texts: list[str], timeout_s: float = 10) -> list[Outcome]:
    plans = [pipeline.planner.plan(text, ["ner", "sentiment"], SETTINGS) for text in texts]
    return await pipeline.analyze_plans(plans, timeout_s)


def spans(outcome: Outcome) -> list[tuple[str, str, int, int]]:
    assert outcome.analysis.ner is not None
    return [(e.text, e.label, e.start, e.end) for e in outcome.analysis.ner.entities]


def test_one_text_is_analysed_with_exact_offsets(models: FakeModels) -> None:
    text = "😀马云在杭州。腾讯公司好棒"
    (outcome,) = asyncio.run(analyze(models.pipeline(), [text]))
    assert spans(outcome) == [("马云", "PER", 1, 3), ("杭州", "LOC", 4, 6), ("腾讯公司", "ORG", 7, 11)]
    sentiment = outcome.analysis.to_dict()["sentiment"]
    assert sentiment["label"] == "positive" and sentiment["model"] == "tiny-sentiment@0.0.1"
    assert sentiment["sentences"] == [{"start": 0, "end": len(text), "label": "positive", "score": sentiment["score"]}]
    assert models.calls == {"ner": [2], "sentiment": [1]}  # two sentences: one NER call carries both


def test_a_batch_of_64_texts_is_a_handful_of_calls_in_request_order(models: FakeModels) -> None:
    texts = [f"{'和' * (i % 5)}马云在杭州{'好' if i % 2 else '差'}" for i in range(64)]
    pipeline = models.pipeline(group_size=16, calls_in_flight=2)
    outcomes = asyncio.run(analyze(pipeline, texts))
    for text, outcome in zip(texts, outcomes, strict=True):
        start = text.index("马云")
        assert spans(outcome) == [("马云", "PER", start, start + 2), ("杭州", "LOC", start + 3, start + 5)]
        assert outcome.analysis.sentiment is not None
        assert outcome.analysis.sentiment.label == ("positive" if text.endswith("好") else "negative")
    assert models.calls == {"ner": [16, 16, 16, 16], "sentiment": [16, 16, 16, 16]}


def test_concurrent_requests_share_calls_and_never_exceed_the_limits(models: FakeModels) -> None:
    models.delay_s = 0.01
    pipeline = models.pipeline(group_size=8, calls_in_flight=2)
    in_flight = {"now": 0, "most": 0}
    original = models.predict_ner

    async def counting(rows: TokenRows) -> Any:
        in_flight["now"] += 1
        in_flight["most"] = max(in_flight["most"], in_flight["now"])
        try:
            return await original(rows)
        finally:
            in_flight["now"] -= 1

    pipeline.clients["ner"]._call = counting

    async def many() -> list[list[Outcome]]:
        return await asyncio.gather(*(analyze(pipeline, [f"马云{'在' * (i % 10)}杭州"]) for i in range(40)))

    results = asyncio.run(many())
    for i, (outcome,) in enumerate(results):
        assert spans(outcome)[1] == ("杭州", "LOC", 2 + i % 10, 4 + i % 10)
    assert in_flight["most"] == 2
    assert max(models.calls["ner"]) == 8 and sum(models.calls["ner"]) == 40
    assert len(models.calls["ner"]) <= 8  # 40 windows travelled in a handful of calls, not 40


def test_a_failed_row_fails_only_its_own_request(models: FakeModels) -> None:
    """Rows of two requests share a call; the replica reports one row failed."""

    poison = int(models.ner.tokenizer.encode(["马"])[0].ids[0])
    sizes: list[int] = []

    async def poisoned_row_fails(rows: TokenRows) -> ModelAnswer:
        sizes.append(len(rows))
        answers: list[Any] = models.ner.tag(rows.rows())
        return FailedRows(tuple(ItemError("the model failed on this window") if row[0] == poison else answer
                                for row, answer in zip(rows.rows(), answers, strict=True)))  # fmt: skip

    pipeline = models.pipeline(ner=poisoned_row_fails, sentiment=models.predict_sentiment, calls_in_flight=1)
    plans = [pipeline.planner.plan(text, ["ner"], SETTINGS) for text in ("马云", "杭州")]

    async def both() -> list[Any]:
        # One submission for both texts, as a batch or two requests queued together would be.
        first, second = pipeline._submit(plans)
        return await asyncio.gather(
            pipeline._collect(first["ner"], 10), pipeline._collect(second["ner"], 10), return_exceptions=True
        )

    first, second = asyncio.run(both())
    assert sizes == [2]  # both rows in one call
    assert isinstance(first, ModelFailureError) and "logged" in first.message
    tags, _ = second[0]
    assert [models.ner.labels[t] for t in tags] == ["B-LOC", "E-LOC"]


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (BackPressureError(num_queued_requests=9, max_queued_requests=8), OverloadedError),
        (RayActorError(), ModelsNotReadyError),
        (ItemError("replica memory 900 MiB is over its budget; retry shortly", retryable=True), OverloadedError),
    ],
)
def test_call_failures_become_api_errors(models: FakeModels, failure: Any, error: type[Exception]) -> None:
    async def failing(rows: TokenRows) -> Any:
        if isinstance(failure, ItemError):
            return FailedRows((failure,) * len(rows))
        raise failure

    pipeline = models.pipeline(sentiment=failing)
    with pytest.raises(error) as raised:
        asyncio.run(analyze(pipeline, ["马云在杭州"]))
    if isinstance(raised.value, OverloadedError):
        assert int(raised.value.headers["Retry-After"]) >= 1


def test_a_timeout_cancels_queued_and_running_calls(models: FakeModels) -> None:
    async def scenario() -> tuple[int, int]:
        models.gate = asyncio.Event()  # calls never finish on their own
        pipeline = models.pipeline(group_size=1, calls_in_flight=1)
        with pytest.raises(RequestTimeoutError):
            await analyze(pipeline, ["马云。杭州。腾讯公司。"], timeout_s=0.05)
        await asyncio.sleep(0)
        client = pipeline.clients["ner"]
        return client.queued, client.in_flight

    queued, in_flight = asyncio.run(scenario())
    # The queued rows were dropped unsent and the running call was cancelled.
    assert (queued, in_flight) == (0, 0)
    assert models.calls["ner"] == [1]


def test_a_call_still_wanted_by_another_request_is_not_cancelled(models: FakeModels) -> None:
    async def scenario() -> list[tuple[str, str, int, int]]:
        models.gate = asyncio.Event()
        pipeline = models.pipeline(group_size=16, calls_in_flight=1)
        plans = [pipeline.planner.plan(text, ["ner"], SETTINGS) for text in ("马云", "杭州")]
        # Both texts ride in one call; the first request gives up, the second still wants it.
        first, second = pipeline._submit(plans)
        with pytest.raises(RequestTimeoutError):
            await pipeline._collect(first["ner"], 0.05)
        assert models.gate is not None
        models.gate.set()
        answers = await pipeline._collect(second["ner"], 10)
        return spans(Outcome(plans[1], assemble(plans[1], {"ner": answers})))

    assert asyncio.run(scenario()) == [("杭州", "LOC", 0, 2)]
    assert models.calls["ner"] == [2]


def test_stream_events_end_in_the_same_result_and_an_early_close_cancels(models: FakeModels) -> None:
    text = "马云在杭州。腾讯公司好。差。"

    async def scenario() -> tuple[list[dict[str, Any]], Outcome, int]:
        pipeline = models.pipeline(group_size=1, calls_in_flight=1)
        plan = pipeline.planner.plan(text, ["ner", "sentiment"], SETTINGS)
        events = [event.to_dict() async for event in pipeline.stream(plan, 10)]
        (outcome,) = await pipeline.analyze_plans([plan], 10)
        # Now a reader that leaves after the first window: the rest must be cancelled.
        models.delay_s = 0.05
        stream = pipeline.stream(plan, 10)
        assert isinstance(await anext(stream), StartEvent)
        assert isinstance(await anext(stream), WindowEvent)
        await stream.aclose()
        await asyncio.sleep(0.01)  # the cancelled call unwinds
        return events, outcome, pipeline.clients["ner"].queued + pipeline.clients["ner"].in_flight

    events, outcome, left = asyncio.run(scenario())
    assert events[0] == {
        "event": "start",
        "length": len(text),
        "tasks": ["ner", "sentiment"],
        "windows": {"ner": 3, "sentiment": 1},
    }
    windows = [event for event in events if event["event"] == "window"]
    assert [event["done"] for event in windows] == [1, 2, 3, 4] and all(e["total"] == 4 for e in windows)
    for event in windows:
        for entity in event.get("entities", []):
            assert text[entity["start"] : entity["end"]] == entity["text"]
    summary = events[-1]
    assert summary["event"] == "summary"
    assert summary == {"event": "summary", **outcome.analysis.to_dict(), "elapsed_ms": summary["elapsed_ms"]}
    assert left == 0


def test_a_stream_failure_raises_an_api_error(models: FakeModels) -> None:
    async def failing(rows: TokenRows) -> Any:
        raise BackPressureError(num_queued_requests=1, max_queued_requests=1)

    async def scenario() -> list[str]:
        pipeline = models.pipeline(ner=failing)
        plan = pipeline.planner.plan("马云", ["ner"], SETTINGS)
        seen = []
        with pytest.raises(OverloadedError):
            async for event in pipeline.stream(plan, 10):
                seen.append(type(event).__name__)
        return seen

    assert asyncio.run(scenario()) == ["StartEvent"]


def test_admission_refuses_work_beyond_what_the_models_finish_in_time_at_once(models: FakeModels) -> None:
    """A backlog the models cannot finish within the time limit: the next request is refused
    with 503 + Retry-After without waiting; what was accepted completes; once the backlog is
    gone a short request is admitted and answered."""
    models.delay_s = 0.02  # per call of up to 16 windows
    pipeline = models.pipeline(group_size=16, calls_in_flight=1)
    big = pipeline.planner.plan("马云在杭州。" * 400, ["ner"], SETTINGS)  # 400 windows, ~0.5 s of work
    medium = pipeline.planner.plan("马云在杭州。" * 60, ["ner"], SETTINGS)  # fits alone, not behind the rest
    small = pipeline.planner.plan("马云在杭州。", ["ner"], SETTINGS)
    timeout_s = 0.5

    async def burst() -> tuple[list[Outcome], float, OverloadedError]:
        accepted = asyncio.ensure_future(pipeline.analyze_plans([big], 30))
        await asyncio.sleep(0.1)  # some calls measured, ~300 windows still queued
        started = time.perf_counter()
        with pytest.raises(OverloadedError) as refused:
            await pipeline.analyze_plans([medium], timeout_s)
        refused_after = time.perf_counter() - started
        return await accepted, refused_after, refused.value

    (outcome,), refused_after, error = asyncio.run(burst())
    assert refused_after < 0.05 and error.status_code == 503 and int(error.headers["Retry-After"]) >= 1
    assert len(spans(outcome)) == 800  # the accepted document completed
    assert pipeline.clients["ner"].backlog == 0
    (after,) = asyncio.run(pipeline.analyze_plans([small], timeout_s))
    assert spans(after) == [("马云", "PER", 0, 2), ("杭州", "LOC", 3, 5)]
    meter = pipeline.clients["ner"].meter
    # measured from the calls, not the prior: 16 rows of ~5 tokens per 20 ms call at most
    assert meter.calibrated and meter.calls >= 20
    assert meter.seconds_per_token != admission.SECONDS_PER_TOKEN_PRIOR
    assert 0.02 / 100 < meter.seconds_per_token < 0.02 / 5, meter.seconds_per_token


def test_a_request_that_cannot_finish_alone_is_refused_whatever_is_queued(models: FakeModels) -> None:
    """Nothing queued, but the request's own work exceeds the time limit at the measured rate:
    refused at once with 413, and the message names the estimate and the limit."""
    pipeline = models.pipeline(group_size=16, calls_in_flight=1)
    pipeline.clients["ner"].meter.calibrate(tokens=100, seconds=0.1)  # 1 ms per token
    plan = pipeline.planner.plan("马云在杭州。" * 200, ["ner"], SETTINGS)  # ~1,000 tokens: ~1 s alone
    assert pipeline.clients["ner"].backlog == 0
    with pytest.raises(PayloadTooLargeError) as refused:
        pipeline.admit([plan], 1.0)
    assert refused.value.status_code == 413
    assert "s of" in str(refused.value) and "time limit (request_timeout_s) is 1 s" in str(refused.value)
    pipeline.admit([plan], 10.0)  # the same work within a longer limit is accepted


def test_the_rate_is_measured_on_successful_attempts_only(models: FakeModels) -> None:
    """A call the replica refuses (over its memory budget) is repeated after a back-off: the
    rate comes from the attempt that answered, not from the wait."""
    answers = {"refused": 1}

    async def refusing_once(rows: TokenRows) -> Any:
        if answers["refused"]:
            answers["refused"] -= 1
            return FailedRows(tuple(ItemError("over its budget", retryable=True) for _ in range(len(rows))))
        return await models.predict_ner(rows)

    pipeline = models.pipeline(group_size=16, calls_in_flight=1, ner=refusing_once)
    plan = pipeline.planner.plan("马云在杭州。", ["ner"], SETTINGS)
    started = time.perf_counter()
    (outcome,) = asyncio.run(pipeline.analyze_plans([plan], 10))
    assert time.perf_counter() - started >= 0.25  # the back-off was waited
    assert spans(outcome) == [("马云", "PER", 0, 2), ("杭州", "LOC", 3, 5)]
    meter = pipeline.clients["ner"].meter
    assert meter.calls == 1 and meter.seconds_per_token * plan.tasks["ner"].token_count() < 0.1


def test_requests_are_finished_oldest_first(models: FakeModels) -> None:
    """Three equal long documents queued together finish one after another (not all together at
    the end, as round-robin did), so under sustained load requests complete steadily."""
    models.delay_s = 0.005
    pipeline = models.pipeline(group_size=16, calls_in_flight=1)
    plans = [pipeline.planner.plan("马云在杭州。" * 64, ["ner"], SETTINGS) for _ in range(3)]
    finished: list[tuple[int, int]] = []

    async def scenario() -> None:
        async def one(index: int) -> None:
            await pipeline.analyze_plans([plans[index]], 30)
            finished.append((index, len(models.calls["ner"])))

        await asyncio.gather(*(one(index) for index in range(3)))

    asyncio.run(scenario())
    assert [index for index, _ in finished] == [0, 1, 2]
    assert [calls for _, calls in finished] == [4, 8, 12]  # 64 windows = 4 calls of 16 each, in turn


def test_cancelled_requests_release_their_queued_work(models: FakeModels) -> None:
    """Counters, not scans: a request given up while its rows wait frees them at once."""
    models.delay_s = 0.05
    pipeline = models.pipeline(group_size=16, calls_in_flight=1)
    plan = pipeline.planner.plan("马云在杭州。" * 100, ["ner"], SETTINGS)

    async def scenario() -> tuple[int, int]:
        task = asyncio.ensure_future(pipeline.analyze_plans([plan], 30))
        await asyncio.sleep(0.01)
        during = pipeline.clients["ner"].backlog
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.1)
        return during, pipeline.clients["ner"].backlog

    during, after = asyncio.run(scenario())
    assert during == plan.tasks["ner"].token_count()
    assert after == 0 and pipeline.clients["ner"].queued == 0


def test_a_model_marked_unavailable_fails_waiting_and_new_requests_at_once(models: FakeModels) -> None:
    """No running replica for too long (the ingress's follower decides): what waits for the
    model — queued and in a call — and every new request gets 503 models_not_ready at once; the
    other model is untouched, and once a replica runs again requests are answered."""
    models.gate = asyncio.Event()  # calls hang, as they do with no replica to take them
    pipeline = models.pipeline(group_size=1, calls_in_flight=1)
    plan = pipeline.planner.plan("马云在杭州。好棒。", ["ner", "sentiment"], SETTINGS)
    ner_only = pipeline.planner.plan("马云在杭州。", ["ner"], SETTINGS)
    sentiment_only = pipeline.planner.plan("好棒。", ["sentiment"], SETTINGS)

    async def scenario() -> tuple[BaseException, float, BaseException, BaseException | None]:
        waiting = asyncio.ensure_future(pipeline.analyze_plans([plan, ner_only], 30))
        await asyncio.sleep(0.05)  # one NER call in flight, the other windows queued
        assert pipeline.clients["ner"].in_flight == 1 and pipeline.clients["ner"].queued >= 1
        started = time.perf_counter()
        pipeline.clients["ner"].mark_unavailable("the NER model has no running replica")
        with pytest.raises(ModelsNotReadyError) as failed:
            await waiting
        failed_after = time.perf_counter() - started
        with pytest.raises(ModelsNotReadyError) as refused:
            await pipeline.analyze_plans([ner_only], 30)
        models.gate.set()  # type: ignore[union-attr]
        (other,) = await pipeline.analyze_plans([sentiment_only], 30)
        assert other.analysis.sentiment is not None and other.analysis.sentiment.label == "positive"
        pipeline.clients["ner"].mark_available()
        (again,) = await pipeline.analyze_plans([ner_only], 30)
        assert spans(again) == [("马云", "PER", 0, 2), ("杭州", "LOC", 3, 5)]
        return failed.value, failed_after, refused.value, None

    failed, failed_after, refused, _ = asyncio.run(scenario())
    assert failed_after < 0.05
    for error in (failed, refused):
        assert isinstance(error, ModelsNotReadyError) and error.status_code == 503
        assert int(error.headers["Retry-After"]) >= 1 and "NER model has no running replica" in str(error)
    assert pipeline.clients["ner"].backlog == 0 and pipeline.clients["ner"].in_flight == 0


def test_a_short_request_is_not_stuck_behind_a_long_document(models: FakeModels) -> None:
    """A short request goes first in the next call: a one-sentence request that arrives behind a
    400-window document finishes in the next call, not after the document."""
    models.delay_s = 0.01
    pipeline = models.pipeline(group_size=16, calls_in_flight=1)
    long_plan = pipeline.planner.plan("马云在杭州。" * 400, ["ner"], SETTINGS)
    short_plan = pipeline.planner.plan("马云在杭州。", ["ner"], SETTINGS)

    async def scenario() -> tuple[int, int]:
        document = asyncio.ensure_future(pipeline.analyze_plans([long_plan], 30))
        await asyncio.sleep(0.015)  # the document's first calls are under way
        calls_before = len(models.calls["ner"])
        (short,) = await pipeline.analyze_plans([short_plan], 30)
        assert spans(short) == [("马云", "PER", 0, 2), ("杭州", "LOC", 3, 5)]
        calls_for_short = len(models.calls["ner"]) - calls_before
        assert not document.done()
        (outcome,) = await document
        return calls_for_short, len(spans(outcome))

    calls_for_short, entities = asyncio.run(scenario())
    assert calls_for_short <= 2, calls_for_short  # the call in flight, then the one that carries it
    assert entities == 800


def test_calls_carry_what_the_model_computes_in_about_the_call_target(models: FakeModels) -> None:
    """A slow model (measured) gets small calls, so a short request never waits long for the
    call in front of it; a fast one gets full groups."""
    pipeline = models.pipeline(group_size=16, calls_in_flight=1)
    plan = pipeline.planner.plan("马云在杭州。" * 64, ["ner"], SETTINGS)
    tokens_per_row = plan.tasks["ner"].token_count() / len(plan.tasks["ner"].windows)
    slow = pipeline.clients["ner"].meter
    slow.calibrate(tokens=1, seconds=0.05 / (2.5 * tokens_per_row))  # ~2.5 rows fill the call target
    models.delay_s = 0.05  # each call takes the target: the measured rate stays where it is
    asyncio.run(pipeline.analyze_plans([plan], 60))
    assert max(models.calls["ner"]) <= 3, models.calls["ner"]
    models.calls["ner"].clear()
    pipeline.clients["ner"].meter.calibrate(tokens=1000, seconds=0.001)  # fast: full groups
    asyncio.run(pipeline.analyze_plans([plan], 60))
    assert models.calls["ner"][0] == 16, models.calls["ner"]


def test_calibration_keeps_the_fastest_of_its_timed_calls_and_calls_since_can_only_lower_alone() -> None:
    """Work elsewhere on the cores only slows a call: one slow timing (a replica starting beside
    the new ingress) must not set what a request's own work is estimated to cost."""
    import numpy as np

    from deployments.runtime.answers import ProbabilityRows

    delays = iter([0.3, 0.3, 0.02, 0.15])  # warming call, then three timed calls: 0.02 s the fastest

    async def call(rows: TokenRows) -> ModelAnswer:
        await asyncio.sleep(next(delays))
        return ProbabilityRows(np.full((len(rows), 2), 0.5, dtype=np.float32))

    client = ModelClient(call, group_size=16, calls_in_flight=1, name="Sentiment")
    rows = [np.arange(1, 51, dtype=np.int64)] * 4  # 200 tokens

    async def calibrate() -> float:
        return await client.calibrate(rows, repeats=3, warm=True)

    seconds_per_token = asyncio.run(calibrate())
    assert 0.02 / 200 <= seconds_per_token < 0.1 / 200, seconds_per_token  # not the 0.3 or 0.15 s timings
    assert client.meter.alone_seconds_per_token == seconds_per_token
    client.meter.observe(tokens=200, seconds=0.01)  # a faster call later: alone follows it down
    assert client.meter.alone_seconds_per_token == pytest.approx(0.01 / 200)
    client.meter.observe(tokens=200, seconds=1.0)  # a slow call moves the load rate only
    assert client.meter.alone_seconds_per_token == pytest.approx(0.01 / 200)
    assert client.meter.seconds_per_token > 0.02 / 200
    with pytest.raises(PayloadTooLargeError):  # 20,000 tokens: 1 s alone against 0.8 s
        client.admit(20_000, horizon_s=0.8, limit_s=1.0)
    client.admit(10_000, horizon_s=0.8, limit_s=1.0)  # 0.5 s alone: accepted, though the load rate says ~11 s
