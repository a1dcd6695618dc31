"""`make bench`'s peers section reduces many wrk points to one headline, zhserve / the best peer per
route; which peer counts as the best, and what the tables say, must not depend on a server running."""

from __future__ import annotations

from load_tests import bench


def point(rps: float, p99: float = 10.0, errors: int = 0, clients: int = 16) -> bench.Point:
    return bench.Point("x", clients, rps, p50_ms=p99 / 2, p99_ms=p99, errors=errors, requests=1000, wrk_cpu_s=0.1)


def test_the_best_peer_is_the_fastest_that_answered_every_request() -> None:
    best = bench.best_peer({"flask": point(200), "mosec": point(900, errors=3), "litserve": point(500)})
    assert best is not None
    assert best[0] == "litserve"


def test_a_tie_in_throughput_goes_to_the_lower_p99() -> None:
    best = bench.best_peer({"gunicorn": point(300, p99=80), "mosec": point(300, p99=40)})
    assert best is not None
    assert best[0] == "mosec"


def test_no_best_peer_when_every_peer_failed_or_none_ran() -> None:
    assert bench.best_peer({}) is None
    assert bench.best_peer({"mosec": point(900, errors=1)}) is None


def test_a_cell_shows_rate_latencies_and_errors() -> None:
    assert bench.peer_cell(point(893.4, p99=26.04)) == "893 / 13.0 / 26.0"
    assert bench.peer_cell(point(47.25, p99=300)) == "47.2 / 150.0 / 300.0"  # production size keeps a decimal
    assert bench.peer_cell(point(10, errors=2)).endswith("(2 errors)")
    assert bench.peer_cell(None) == "–"


def peer_points() -> dict[tuple[str, str, str, int], bench.Point]:
    points = {}
    for route in bench.PEER_ROUTES:
        points[("embedded", "flask", route, 16)] = point(100)
        points[("embedded", "mosec", route, 16)] = point(400)
        points[("base", "gunicorn", route, 16)] = point(50)
    return points


def test_peer_rows_give_every_peer_and_the_best_one_per_route() -> None:
    rows = bench.peer_rows(peer_points(), "embedded", [16])
    assert [row[0] for row in rows] == ["/ner", "/predict", "/analyze"]
    header = list(bench.PEERS)
    for row in rows:
        assert row[1] == "16"
        cells = dict(zip(header, row[2:-1], strict=True))
        assert cells["flask"].startswith("100 /")
        assert cells["gunicorn"] == "–" and cells["litserve"] == "–"
        assert row[-1] == "Mosec"


def test_the_headline_divides_zhserve_by_the_best_peer_and_says_when_zhserve_did_not_run() -> None:
    ours = {("embedded", "ner", 16): point(600, p99=20), ("base", "analyze", 16): point(25)}
    rows = bench.headline_rows(peer_points(), ours, ["embedded", "base"], [16])
    by_key = {(row[0], row[1]): row for row in rows}
    assert len(rows) == 6
    ner = by_key[("embedded models", "/v1/ner")]
    assert ner[3] == "Mosec: 400 / 10.0" and ner[4] == "600 / 20.0" and ner[5] == "1.50×"
    assert by_key[("embedded models", "/v1/sentiment")][4:] == ["–", "–"]
    assert by_key[("BERT-base INT8 shape twins", "/v1/analyze")][5] == "0.50×"
    assert by_key[("BERT-base INT8 shape twins", "/v1/ner")][3].startswith("gunicorn -w 2: 50.0")


def test_the_base_section_measures_zhserve_on_every_route_when_the_peers_need_it(monkeypatch, tmp_path) -> None:
    class FakeService:
        url = "http://127.0.0.1:1"

        def stop(self) -> float:
            return 0.0

    measured: list[str] = []

    def fake_wrk(url: str, script, clients: int, seconds: float, label: str, items: int = 1) -> bench.Point:
        measured.append(url.removeprefix(FakeService.url))
        return point(10.0 * clients)

    twins = {"ner": tmp_path / "ner", "sentiment": tmp_path / "sentiment"}
    monkeypatch.setattr(bench, "base_twins", lambda work: (twins, twins))
    monkeypatch.setattr(bench, "start_seed", lambda *args, **kwargs: FakeService())
    monkeypatch.setattr(bench, "start_zhserve", lambda *args, **kwargs: FakeService())
    monkeypatch.setattr(bench, "stop_zhserve", lambda service: (0.0, []))
    monkeypatch.setattr(bench, "stack_memory", lambda service: [["stack", "1 MiB"], ["replica NER (RSS)", "1 MiB"]])
    monkeypatch.setattr(bench, "warm_up", lambda url, script: None)
    monkeypatch.setattr(bench, "wrk", fake_wrk)
    lua = {"text": tmp_path / "text.lua"}

    only_analyze = bench.base_size(bench.Report(), tmp_path, lua, 1.0, [1, 16])
    assert set(only_analyze) == {("analyze", 1), ("analyze", 16)}
    measured.clear()
    report = bench.Report()
    every = bench.base_size(report, tmp_path, lua, 1.0, [1, 16], every_route=True)
    assert set(every) == {(route, count) for route in bench.PEER_ROUTES for count in (1, 16)}
    assert every[("ner", 16)].rps == 160.0
    assert measured.count("/v1/ner") == measured.count("/v1/sentiment") == 2
    assert any("Production size" in line for line in report.lines)
