"""The HTTP layer's limits against the real service: 431 for big heads, 408 for slow ones."""

import json
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from app.features import FEATURE_NAMES
from app.protocol import BODY_TIMEOUT, HEAD_LIMIT, HEAD_TIMEOUT
from app.synthetic import generate
from bench.procfs import rss_mib
from tests.conftest import API_KEY, HEADERS
from tests.server import (
    RawResponse,
    Server,
    address,
    client_port,
    closed_by_server,
    log_records,
    read_response,
    scrape,
    start_server,
    total,
    wait_for,
    worker_pids,
)

pytestmark = pytest.mark.process

SCORE = "/v1/fraud-score"
MIB = 1 << 20


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, onnx_model_path: Path) -> Iterator[Server]:
    running = start_server(tmp_path_factory.mktemp("limits"), MODEL_PATH=onnx_model_path)
    try:
        yield running
    finally:
        running.stop()


@dataclass
class StalledBody:
    sock: socket.socket
    sent_at: float
    counted_before: float


STALLED_LABELS = {"route": SCORE, "method": "POST", "status": "408"}


@pytest.fixture(scope="module", autouse=True)
def stalled_body(server: Server) -> Iterator[StalledBody]:
    """A request whose body stops short, sent before the module's first test: the 30 s until
    its 408 pass while the others run (test_stalled_body_is_408_answered_by_the_app, last)."""
    before = total(scrape(server), "fraud_http_requests_total", **STALLED_LABELS)
    head = (
        f"POST {SCORE} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"X-API-Key: {API_KEY}\r\nContent-Length: 900\r\n\r\n"
    ).encode()
    with socket.create_connection(address(server)) as sock:
        sent_at = time.monotonic()
        sock.sendall(head + b'{"Time": 0.0, "V1": ')
        yield StalledBody(sock, sent_at, before)


def exchange(server: Server, data: bytes, piece: int | None = None) -> RawResponse:
    """Send `data` (in writes of `piece` bytes, if given), read the answer, expect the close."""
    with socket.create_connection(address(server), timeout=20) as sock:
        step = piece or len(data)
        for start in range(0, len(data), step):
            sock.sendall(data[start : start + step])
        response = read_response(sock)
        assert closed_by_server(sock)
        return response


def head_of_size(size: int, path: str = "/health/live") -> bytes:
    """A GET whose request line, headers and blank line are exactly `size` bytes."""
    start = f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nX-Pad: ".encode()
    end = b"\r\n\r\n"
    return start + b"p" * (size - len(start) - len(end)) + end


def request_lines(server: Server, **fields: Any) -> list[dict[str, Any]]:
    wanted = fields.items()
    return [
        record
        for record in log_records(server)
        if record.get("message") == "request" and wanted <= record.items()
    ]


# --- 431 -----------------------------------------------------------------------------------------


def test_head_of_exactly_the_limit_is_served(server: Server) -> None:
    response = exchange(server, head_of_size(HEAD_LIMIT))
    assert response.status == 200
    assert json.loads(response.body) == {"status": "alive"}


@pytest.mark.parametrize("piece", [None, 1000], ids=["one-write", "1000-byte-writes"])
def test_head_one_byte_over_the_limit_is_431_and_closed(server: Server, piece: int | None) -> None:
    response = exchange(server, head_of_size(HEAD_LIMIT + 1), piece)
    assert response.status == 431
    assert json.loads(response.body) == {
        "detail": "Request line and headers larger than 65536 bytes"
    }
    assert response.headers["content-type"] == "application/json"
    assert response.headers["connection"] == "close"
    [line] = request_lines(server, request_id=response.headers["x-request-id"])
    assert {key: line[key] for key in ("logger", "method", "path", "route", "status")} == {
        "logger": "app.request",
        "method": "GET",
        "path": "/health/live",
        "route": "unmatched",
        "status": 431,
    }


def test_431_is_counted_and_its_headers_are_not_logged(server: Server) -> None:
    labels = {"route": "unmatched", "status": "431"}
    before = total(scrape(server), "fraud_http_requests_total", **labels)
    secret_head = b"GET /v1/model-info HTTP/1.1\r\nX-API-Key: " + API_KEY.encode() + b"\r\n"
    response = exchange(server, secret_head + b"X-Pad: " + b"q" * HEAD_LIMIT + b"\r\n\r\n")
    assert response.status == 431

    def counted() -> float:
        return total(scrape(server), "fraud_http_requests_total", **labels) - before

    wait_for(lambda: counted() >= 1, "the 431 to be counted")
    assert counted() == 1
    assert API_KEY not in server.logs()
    assert "qqqq" not in server.logs()


def test_a_key_sent_in_the_path_is_not_logged(server: Server) -> None:
    """A client that puts its key in the URL: 404 from the app (no route, or a route's
    parameter: the model name of /v2), 431 from the HTTP layer; or sends it as its request id."""
    not_found = httpx.get(f"{server.url}/v1/fraud-score/{API_KEY}", timeout=10)
    assert not_found.status_code == 404
    as_model_name = [
        httpx.get(f"{server.url}/v2/models/{API_KEY}", headers=HEADERS, timeout=10),
        httpx.get(f"{server.url}/v2/models/{API_KEY}/ready", timeout=10),
    ]
    assert [response.status_code for response in as_model_name] == [404, 404]
    as_request_id = httpx.get(f"{server.url}/health", headers={"X-Request-ID": API_KEY})
    assert as_request_id.headers["x-request-id"] != API_KEY
    too_big = exchange(server, head_of_size(HEAD_LIMIT + 1, f"/v1/{API_KEY}"))
    assert too_big.status == 431
    responses_ids = [
        not_found.headers["x-request-id"],
        *(response.headers["x-request-id"] for response in as_model_name),
        as_request_id.headers["x-request-id"],
        too_big.headers["x-request-id"],
    ]
    for response_id in responses_ids:
        wait_for(lambda rid=response_id: request_lines(server, request_id=rid), "the log line")
    assert API_KEY not in server.logs()
    paths = {line["path"] for line in request_lines(server, route="unmatched")}
    assert {"/v1/fraud-score/[api-key]", "/v1/[api-key]"} <= paths
    model_paths = {line["path"] for line in request_lines(server, route="/v2/models/{model_name}")}
    assert "/v2/models/[api-key]" in model_paths


def test_huge_heads_leave_worker_memory_flat(server: Server) -> None:
    """Ten clients each try a 128 MiB header at once; each worker's RSS must not grow 16 MiB."""
    pids = sorted(worker_pids(server))
    baseline = {pid: rss_mib(pid) or 0.0 for pid in pids}
    peak = dict(baseline)
    sending = threading.Event()
    sending.set()

    def sample() -> None:
        while sending.is_set():
            for pid in pids:
                peak[pid] = max(peak[pid], rss_mib(pid) or 0.0)
            time.sleep(0.02)

    answers: list[int] = []

    def attempt() -> None:
        with socket.create_connection(address(server), timeout=30) as sock:
            try:
                sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: test\r\nX-Big: ")
                for _ in range(128):
                    sock.sendall(b"b" * MIB)
            except OSError:
                pass  # refused and closed before it all went: what was answered is still read
            answers.append(read_response(sock, timeout=30).status)
            assert closed_by_server(sock)

    sampler = threading.Thread(target=sample)
    sampler.start()
    clients = [threading.Thread(target=attempt) for _ in range(10)]
    for client in clients:
        client.start()
    for client in clients:
        client.join()
    sending.clear()
    sampler.join()
    assert answers == [431] * 10
    growth = {pid: round(peak[pid] - baseline[pid], 1) for pid in pids}
    print(f"RSS per worker before {baseline} MiB, peak growth {growth} MiB")
    assert all(grown < 16 for grown in growth.values()), growth


# --- 408 -----------------------------------------------------------------------------------------


def test_slow_heads_are_answered_408_and_closed(server: Server) -> None:
    """300 sockets sending a head one byte at a time: >= 95 % answered 408 and closed in 15 s."""
    endless = b"GET /health/live HTTP/1.1\r\nHost: test\r\nX-Slow: " + b"s" * 10_000
    selector = selectors.DefaultSelector()
    started: dict[socket.socket, float] = {}
    received: dict[socket.socket, bytes] = {}
    closed_after: dict[socket.socket, float] = {}
    sockets = [socket.create_connection(address(server), timeout=5) for _ in range(300)]
    try:
        for sock in sockets:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
            received[sock] = b""
        sent = 0
        deadline = time.monotonic() + HEAD_TIMEOUT + 5
        while time.monotonic() < deadline and len(closed_after) < len(sockets):
            for sock in sockets:
                if not received[sock] and sock not in closed_after:
                    try:
                        sock.send(endless[sent : sent + 1])
                    except OSError:
                        continue  # reset: it will not count as answered
                    started.setdefault(sock, time.monotonic())
            sent += 1
            pause_until = time.monotonic() + 0.25
            while (left := pause_until - time.monotonic()) > 0:
                for key, _ in selector.select(timeout=left):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    chunk = sock.recv(65536)
                    received[sock] += chunk
                    if not chunk:
                        closed_after[sock] = time.monotonic() - started[sock]
                        selector.unregister(sock)
        answered = [
            sock
            for sock in sockets
            if sock in closed_after
            and closed_after[sock] <= HEAD_TIMEOUT + 5
            and received[sock].startswith(b"HTTP/1.1 408 ")
        ]
        print(f"{len(answered)} of {len(sockets)} slow sockets answered 408 and closed in 15 s")
        assert len(answered) >= 0.95 * len(sockets)
        assert min(closed_after.values()) >= HEAD_TIMEOUT - 0.5  # never before the timeout
        body = received[answered[0]].partition(b"\r\n\r\n")[2]
        assert json.loads(body) == {"detail": "Request headers not received within 10 seconds"}
    finally:
        for sock in sockets:
            sock.close()


def test_malformed_chunked_body_is_answered_400_and_closed(server: Server) -> None:
    """The parser gives up inside a body the app is waiting for: the app answers, at once."""
    head = (
        f"POST {SCORE} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"X-API-Key: {API_KEY}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    with socket.create_connection(address(server), timeout=20) as sock:
        started = time.monotonic()
        sock.sendall(head + b"ZZ\r\nabc\r\n0\r\n\r\n")
        response = read_response(sock, timeout=10)
        assert closed_by_server(sock)
    assert time.monotonic() - started < 5
    assert response.status == 400
    assert json.loads(response.body) == {"detail": "Invalid HTTP request"}
    [line] = request_lines(server, request_id=response.headers["x-request-id"])
    assert (line["route"], line["status"]) == (SCORE, 400)


def test_a_client_gone_mid_body_is_a_499_not_a_server_error(server: Server) -> None:
    labels = {"route": SCORE, "method": "POST"}
    before_500 = total(scrape(server), "fraud_http_requests_total", status="500", **labels)
    head = (
        f"POST {SCORE} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"X-API-Key: {API_KEY}\r\nContent-Length: 1000\r\n\r\n"
    ).encode()
    with socket.create_connection(address(server), timeout=20) as sock:
        sock.sendall(head + b'{"Time": 0.0')
        time.sleep(0.5)  # the app is reading the body
    wait_for(
        lambda: total(scrape(server), "fraud_http_requests_total", status="499", **labels) >= 1,
        "the abandoned request to be counted as 499",
    )
    assert total(scrape(server), "fraud_http_requests_total", status="500", **labels) == before_500
    assert not [r for r in log_records(server) if r.get("message") == "unhandled error"]


# --- what must not change ------------------------------------------------------------------------


def test_keep_alive_connection_idle_past_the_head_timeout_is_unaffected(server: Server) -> None:
    patient = httpx.Limits(keepalive_expiry=60)  # httpx drops idle connections after 5 s
    with httpx.Client(base_url=server.url, timeout=10, limits=patient) as client:
        first = client.get("/health/live")
        port = client_port(first)
        time.sleep(HEAD_TIMEOUT + 1.5)
        second = client.get("/health/live")
        assert (first.status_code, second.status_code) == (200, 200)
        assert client_port(second) == port  # the same connection, kept alive


def test_head_on_the_health_routes_is_gets_head_without_a_body(server: Server) -> None:
    """`curl -I` and HEAD probes: GET's status and Content-Length, and not one byte of body (a
    byte would be read as the start of the next response on the same connection)."""
    for path in ("/health", "/health/live", "/v2/health/live", "/v2/health/ready"):
        length = httpx.get(f"{server.url}{path}", timeout=10).headers["content-length"]
        head = f"HEAD {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode()
        then = b"GET /health/live HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
        with socket.create_connection(address(server), timeout=20) as sock:
            sock.sendall(head + then)
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
        first, _, rest = received.partition(b"\r\n\r\n")
        assert first.startswith(b"HTTP/1.1 200 "), path
        assert f"content-length: {length}".encode() in first.lower(), path
        assert rest.startswith(b"HTTP/1.1 200 "), path  # the next response follows at once
        assert rest.endswith(b'{"status":"alive"}'), path


def test_pipelined_requests_are_each_answered(server: Server) -> None:
    keep = b"GET /health/live HTTP/1.1\r\nHost: test\r\n\r\n"
    last = b"GET /health HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    with socket.create_connection(address(server), timeout=20) as sock:
        sock.sendall(keep + keep + last)
        assert [read_response(sock).status for _ in range(3)] == [200, 200, 200]
        assert closed_by_server(sock)


def tagged(request_id: str) -> bytes:
    return f"GET /health/live HTTP/1.1\r\nHost: test\r\nX-Request-ID: {request_id}\r\n\r\n".encode()


@pytest.mark.parametrize(
    ("bad", "status"),
    [
        (b"GET /health HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),  # TLS to the plain port
        (head_of_size(HEAD_LIMIT + 1), 431),
        (b"GET /health HTTP/1.1\r\n\r\n", 400),
    ],
    ids=["two-content-lengths", "tls", "head-over-the-limit", "no-host"],
)
@pytest.mark.parametrize("before", [1, 2, 3])
def test_a_bad_request_pipelined_after_good_ones_is_answered_after_them(
    server: Server, bad: bytes, status: int, before: int
) -> None:
    """Every request read before the bad one is answered, in order, then the refusal, then the
    close (with two or more, the connection used to hang, unanswered, and lose a request)."""
    ids = [f"pipelined-{before}-{status}-{n}-{time.monotonic_ns()}" for n in range(before)]
    with socket.create_connection(address(server), timeout=20) as sock:
        sock.sendall(b"".join(map(tagged, ids)) + bad)
        answered = [read_response(sock) for _ in range(before)]
        refusal = read_response(sock)
        assert closed_by_server(sock)
    assert [(r.status, r.headers["x-request-id"]) for r in answered] == [(200, i) for i in ids]
    assert refusal.status == status
    assert refusal.headers["connection"] == "close"
    assert "detail" in json.loads(refusal.body)


@pytest.mark.parametrize("size", [HEAD_LIMIT + 1, 2 * HEAD_LIMIT])
def test_a_head_over_the_limit_starting_inside_a_read_is_431(server: Server, size: int) -> None:
    """The head after a pipelined request begins in the middle of a read, where the bytes fed
    to the parser are not counted as its own: its size is taken from what was parsed."""
    with socket.create_connection(address(server), timeout=20) as sock:
        sock.sendall(tagged("first") + head_of_size(size))
        assert read_response(sock).status == 200
        assert read_response(sock).status == 431
        assert closed_by_server(sock)
    with socket.create_connection(address(server), timeout=20) as sock:
        sock.sendall(tagged("first") + head_of_size(HEAD_LIMIT))
        assert [read_response(sock).status for _ in range(2)] == [200, 200]


def expecting(key: str, length: int) -> bytes:
    return (
        f"POST {SCORE} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"X-API-Key: {key}\r\nContent-Length: {length}\r\nExpect: 100-continue\r\n\r\n"
    ).encode()


@pytest.mark.parametrize(("key", "length", "status"), [("wrong", 900, 403), (API_KEY, MIB, 413)])
def test_an_answer_before_100_continue_closes_the_connection(
    server: Server, key: str, length: int, status: int
) -> None:
    """The client may then never send its body (RFC 9110 §10.1.1), and its next request would
    be read as that body: the answer says so and the connection closes."""
    with socket.create_connection(address(server), timeout=20) as sock:
        sock.sendall(expecting(key, length))
        response = read_response(sock)
        assert (response.status, response.headers["connection"]) == (status, "close")
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: test\r\n\r\n")  # not a body
        assert closed_by_server(sock)


def test_after_100_continue_the_connection_is_kept(
    server: Server, mock_body: dict[str, float]
) -> None:
    body = json.dumps(mock_body).encode()
    with socket.create_connection(address(server), timeout=20) as sock:
        sock.sendall(expecting(API_KEY, len(body)))
        assert sock.recv(25) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        response = read_response(sock)
        assert response.status == 200
        assert "connection" not in response.headers
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: test\r\n\r\n")
        assert read_response(sock).status == 200


def test_large_batch_in_large_reads_is_served(server: Server) -> None:
    """Small headers, then an 800 KB body in the same reads: the head limit is not the body's."""
    features, _ = generate(rows=1000, seed=3)
    rows = [dict(zip(FEATURE_NAMES, map(float, row), strict=True)) for row in features]
    body = json.dumps({"transactions": rows}).encode()
    assert len(body) > 10 * HEAD_LIMIT
    head = (
        f"POST {SCORE}/batch HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"X-API-Key: {API_KEY}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    response = exchange(server, head + body)
    assert response.status == 200
    assert len(json.loads(response.body)["results"]) == 1000


@pytest.mark.parametrize("codings", ["gzip, chunked", "deflate,chunked", "identity, chunked"])
def test_a_transfer_coding_other_than_chunked_is_501(server: Server, codings: str) -> None:
    """httptools reads `gzip, chunked` as chunked alone: the body would be scored as sent."""
    chunk = b'{"Time": 0}'
    request = (
        f"POST {SCORE} HTTP/1.1\r\nHost: test\r\nX-API-Key: {API_KEY}\r\n"
        f"Transfer-Encoding: {codings}\r\n\r\n"
    ).encode() + b"%x\r\n%s\r\n0\r\n\r\n" % (len(chunk), chunk)
    response = exchange(server, request)
    assert response.status == 501
    assert json.loads(response.body) == {
        "detail": "Transfer-Encoding other than chunked is not supported"
    }


@pytest.mark.parametrize(
    ("head", "detail"),
    [
        (b"GET /health HTTP/1.1\r\n", "An HTTP/1.1 request must have a Host header"),
        (
            b"GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n",
            "A request must not have more than one Host header",
        ),
        (
            b"GET /health HTTP/1.0\r\nhost: a\r\nHOST: a\r\n",
            "A request must not have more than one Host header",
        ),
    ],
    ids=["http-1.1-without-host", "two-hosts", "two-hosts-http-1.0"],
)
def test_a_request_without_one_host_header_is_400(server: Server, head: bytes, detail: str) -> None:
    """RFC 9112 §3.2: a server MUST answer 400 to these (a proxy may route by either Host)."""
    response = exchange(server, head + b"\r\n")
    assert response.status == 400
    assert json.loads(response.body) == {"detail": detail}
    assert response.headers["connection"] == "close"


def test_http_1_0_needs_no_host_header(server: Server) -> None:
    with socket.create_connection(address(server), timeout=20) as sock:
        sock.sendall(b"GET /health HTTP/1.0\r\n\r\n")
        assert read_response(sock).status == 200


def test_invalid_request_is_a_json_400(server: Server) -> None:
    response = exchange(server, b"NOT HTTP AT ALL\r\n\r\n")
    assert response.status == 400
    assert json.loads(response.body) == {"detail": "Invalid HTTP request"}
    assert response.headers["connection"] == "close"


def test_under_v2_the_http_layer_answers_in_oip_shape(server: Server) -> None:
    """tritonclient reads `error`: the refusals made before any route runs have it under /v2."""
    too_big = exchange(server, head_of_size(HEAD_LIMIT + 1, "/v2/health/live"))
    assert too_big.status == 431
    assert json.loads(too_big.body) == {"error": "Request line and headers larger than 65536 bytes"}
    framing = (
        b"POST /v2/models/fraud/infer HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    invalid = exchange(server, framing)
    assert invalid.status == 400
    assert json.loads(invalid.body) == {"error": "Invalid HTTP request"}


def test_normal_requests_still_pass(server: Server, mock_body: dict[str, float]) -> None:
    response = httpx.post(f"{server.url}{SCORE}", json=mock_body, headers=HEADERS, timeout=10)
    assert response.status_code == 200
    assert "connection" not in response.headers  # kept alive


def test_stalled_body_is_408_answered_by_the_app(server: Server, stalled_body: StalledBody) -> None:
    left = stalled_body.sent_at + BODY_TIMEOUT + 15 - time.monotonic()
    response = read_response(stalled_body.sock, timeout=max(left, 1))
    answered_after = time.monotonic() - stalled_body.sent_at
    assert closed_by_server(stalled_body.sock)
    assert response.status == 408
    assert json.loads(response.body) == {"detail": "Request body not received within 30 seconds"}
    assert response.headers["connection"] == "close"
    assert answered_after >= BODY_TIMEOUT - 0.5
    # The app answered it, at the bound (this test reads it whenever its turn comes): its own
    # log line, with the route and the request's time, and its own counter.
    [line] = request_lines(server, request_id=response.headers["x-request-id"])
    assert (line["route"], line["status"]) == (SCORE, 408)
    assert BODY_TIMEOUT - 0.5 <= line["latency_ms"] / 1000 < BODY_TIMEOUT + 10
    assert not [record for record in log_records(server) if record.get("level") == "error"]
    wait_for(
        lambda: (
            total(scrape(server), "fraud_http_requests_total", **STALLED_LABELS)
            - stalled_body.counted_before
            >= 1
        ),
        "the 408 to be counted",
    )
