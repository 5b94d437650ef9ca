"""What the inspector server must guarantee, checked against a real `inspect_model.py` process serving two
small trained checkpoints: its JSON equals what trace() and numpy compute in this process, generation
streams the tokens generate.generate draws and the distributions generate.filter_logits defines, one
generation runs per client, bad requests get a 4xx JSON error and the server keeps serving, its
memory stays flat over 200 requests, it answers only its own page (not another Host, another Origin or
a body not sent as JSON), and stalled or departed clients neither block it nor fill its console."""

import http.client
import json
import math
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from generate import filter_logits, generate, load
from inspect_model import (
    MAX_BODY_BYTES,
    MAX_CONNECTIONS,
    MAX_NEW_TOKENS,
    READ_TIMEOUT_SECONDS,
    ServedHosts,
    trace,
)

pytestmark = pytest.mark.slow  # every test talks to inspect_model.py running as a process

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "ROMEO:\nWhat light through yonder window breaks?"


def call(url: str, path: str, body: dict | None = None, data: bytes | None = None,
         headers: dict | None = None, method: str | None = None) -> tuple[int, object]:
    """One request; returns the status and the JSON answer (a list of objects for a JSON-lines stream).
    A body is sent as the page sends it, with Content-Type: application/json; a header given as None is
    left out."""
    address = urlsplit(url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=120)
    if body is not None:
        data = json.dumps(body).encode()
    if data is not None:
        headers = {"Content-Type": "application/json", **(headers or {})}
    headers = {name: value for name, value in (headers or {}).items() if value is not None}
    try:
        connection.request(method or ("GET" if data is None else "POST"), path, body=data, headers=headers)
        response = connection.getresponse()
        payload = response.read().decode()
    finally:
        connection.close()
    if response.getheader("Content-Type") == "application/x-ndjson":
        return response.status, [json.loads(line) for line in payload.splitlines()]
    return response.status, json.loads(payload)


def softmax64(logits) -> np.ndarray:
    """Softmax in float64 with numpy: an independent check of the server's probabilities."""
    z = np.asarray(logits, dtype=np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.fixture(scope="module")
def loaded(small_checkpoints):
    """The same checkpoints loaded in this process, to compute what the server should answer."""
    return [load(path, "cpu", "float32") for path in small_checkpoints]


def test_models_lists_each_checkpoint_with_its_limits(inspector, small_checkpoints):
    status, answer = call(inspector.url, "/api/models")
    assert status == 200
    assert [m["name"] for m in answer["models"]] == [str(p) for p in small_checkpoints]
    assert [m["n_layer"] for m in answer["models"]] == [2, 2]
    assert answer["models"][0]["block_size"] == 64
    assert answer["limits"]["max_new_tokens"] == MAX_NEW_TOKENS
    assert answer["limits"]["long_prompts"] == "refused"


@pytest.mark.parametrize("model_index", [0, 1])
def test_trace_endpoint_reports_the_models_distribution_at_every_position(inspector, loaded, model_index):
    model, tokenizer = loaded[model_index]
    status, answer = call(inspector.url, "/api/trace", {"model": model_index, "text": PROMPT, "top_n": 5,
                                                         "logits": True})
    assert status == 200
    ids = tokenizer.encode(PROMPT)
    assert [t["id"] for t in answer["tokens"]] == ids
    assert "".join(t["text"] for t in answer["tokens"]) == PROMPT
    expected_logits = trace(model, ids).logits.numpy()
    np.testing.assert_allclose(answer["logits"], expected_logits, atol=1e-4)
    probs = softmax64(expected_logits)
    for pos, here in enumerate(answer["positions"]):
        order = np.argsort(-probs[pos], kind="stable")
        assert [c["id"] for c in here["top"]] == order[:5].tolist()
        np.testing.assert_allclose([c["prob"] for c in here["top"]], probs[pos][order[:5]], rtol=1e-5)
        entropy = -(probs[pos] * np.log2(probs[pos])).sum()
        assert here["entropy_bits"] == pytest.approx(entropy, rel=1e-5)
        if pos + 1 < len(ids):
            following = ids[pos + 1]
            assert here["next"]["id"] == following
            assert here["next"]["rank"] == 1 + int((probs[pos] > probs[pos][following]).sum())
            assert here["next"]["loss"] == pytest.approx(-math.log(probs[pos][following]), rel=1e-5)
        else:
            assert here["next"] is None
    losses = [-math.log(probs[pos][ids[pos + 1]]) for pos in range(len(ids) - 1)]
    assert answer["loss"]["mean"] == pytest.approx(np.mean(losses), rel=1e-5)
    assert answer["loss"]["bits_per_char"] == pytest.approx(sum(losses) / (len(ids) - 1) / math.log(2), rel=1e-5)


def test_trace_endpoint_logit_lens_ends_at_the_output(inspector, loaded):
    model, tokenizer = loaded[0]
    status, answer = call(inspector.url, "/api/trace", {"text": PROMPT})
    assert status == 200
    lens = answer["lens"]
    assert lens["layers"] == ["embeddings", "block 1", "block 2"]
    assert lens["top"][-1] == [here["top"][:len(lens["top"][-1][0])] for here in answer["positions"]]
    assert lens["next_prob"][-1] == pytest.approx([here["next"]["prob"] for here in answer["positions"][:-1]])
    residual = trace(model, tokenizer.encode(PROMPT)).residual
    np.testing.assert_allclose(lens["residual_norm"], residual.norm(dim=-1).numpy(), rtol=1e-4)


def test_attention_endpoint_sends_each_row_up_to_the_diagonal(inspector, loaded):
    model, tokenizer = loaded[1]
    status, answer = call(inspector.url, "/api/attention", {"model": 1, "text": PROMPT, "layer": 1})
    assert status == 200
    expected = trace(model, tokenizer.encode(PROMPT)).attention[1]  # (n_head, T, T)
    assert len(answer["heads"]) == 2
    for head, rows in enumerate(answer["heads"]):
        assert [len(row) for row in rows] == list(range(1, len(expected[head]) + 1))
        for query, row in enumerate(rows):
            np.testing.assert_allclose(row, expected[head, query, :query + 1].numpy(), atol=1e-5)
            assert sum(row) == pytest.approx(1.0, abs=1e-4)  # rounded to 5 decimals


def test_generation_streams_the_filtered_distribution_and_the_tokens_generate_draws(inspector, loaded):
    model, tokenizer = loaded[0]
    settings = {"temperature": 0.9, "top_k": 8, "top_p": 0.9, "seed": 3}
    status, lines = call(inspector.url, "/api/generate", {"text": PROMPT, "max_new_tokens": 12, "top_n": 4,
                                                          **settings})
    assert status == 200
    assert lines[0]["type"] == "start" and lines[-1] == {"type": "end", "reason": "length", "steps": 12, "text": ""}
    steps = lines[1:-1]
    prompt_ids = tokenizer.encode(PROMPT)
    generator = torch.Generator().manual_seed(3)
    expected = generate(model, torch.tensor([prompt_ids]), 12, 0.9, 8, 0.9, generator=generator)[0].tolist()
    assert [step["id"] for step in steps] == expected[len(prompt_ids):]
    assert "".join(step["text"] for step in steps) == tokenizer.decode(expected[len(prompt_ids):])
    for number, step in enumerate(steps):
        with torch.no_grad():
            logits = model(torch.tensor([expected[:len(prompt_ids) + number]]))[0][:, -1]
        before = softmax64(logits[0].numpy())
        filtered = filter_logits(logits, 0.9, 8, 0.9)[0]
        after = F.softmax(filtered.double(), dim=-1).numpy()
        assert step["kept"] == int(torch.isfinite(filtered).sum()) <= 8
        shown = [c["id"] for c in step["candidates"]]
        assert shown[:4] == np.argsort(-before, kind="stable")[:4].tolist()
        assert step["id"] in shown
        for candidate in step["candidates"]:
            assert candidate["before"] == pytest.approx(before[candidate["id"]], rel=1e-4, abs=1e-7)
            assert candidate["after"] == pytest.approx(after[candidate["id"]], rel=1e-4, abs=1e-7)


def open_stream(url: str, body: dict) -> http.client.HTTPResponse:
    """Start a generation and return its response, to be read line by line."""
    address = urlsplit(url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=120)
    connection.request("POST", "/api/generate", body=json.dumps(body).encode(),
                       headers={"Content-Type": "application/json"})
    return connection.getresponse()


def test_null_stands_for_a_fields_default(inspector):
    status, lines = call(inspector.url, "/api/generate", {"text": PROMPT, "max_new_tokens": None, "top_k": None,
                                                          "temperature": None, "top_n": None, "seed": 1})
    assert status == 200
    assert lines[-1]["steps"] == 200  # the default
    assert all(len(line["candidates"]) >= 10 for line in lines if line["type"] == "token")


def test_a_new_generation_from_the_same_client_stops_the_one_before(inspector):
    body = {"text": PROMPT, "max_new_tokens": MAX_NEW_TOKENS, "top_n": 50, "client": "tab-1"}
    first = open_stream(inspector.url, body)
    assert json.loads(first.readline())["type"] == "start"
    assert json.loads(first.readline())["type"] == "token"  # running, with about a second of work left
    other_client = open_stream(inspector.url, {**body, "max_new_tokens": 3, "client": "tab-2"})
    second = open_stream(inspector.url, {**body, "max_new_tokens": 5})
    first_end = json.loads(first.read().splitlines()[-1])
    assert first_end["reason"] == "stopped" and first_end["steps"] < MAX_NEW_TOKENS
    assert json.loads(second.read().splitlines()[-1]) == {"type": "end", "reason": "length", "steps": 5, "text": ""}
    assert json.loads(other_client.read().splitlines()[-1])["reason"] == "length"  # other clients run on


BAD_REQUESTS = {
    "not JSON": (dict(data=b"{text: 1}"), 400, "not valid JSON"),
    "a list": (dict(body=[PROMPT]), 400, "must be a JSON object"),
    "no text": (dict(body={"model": 0}), 400, "'text' is missing"),
    "null text": (dict(body={"text": None}), 400, "'text' is missing"),
    "a typo": (dict(body={"txt": PROMPT}), 400, "unknown field(s) txt"),
    "wrong type": (dict(body={"text": 5}), 400, "text must be str"),
    "a bool for a number": (dict(body={"text": PROMPT, "top_n": True}), 400, "top_n must be int"),
    "unknown model": (dict(body={"text": PROMPT, "model": 7}), 404, "model must be in 0..1"),
    "too many candidates": (dict(body={"text": PROMPT, "top_n": 10_000}), 400, "top_n must be in"),
    "too long for the context": (dict(body={"text": "a" * 65}), 400, "more than the 64 tokens of context"),
    "unknown characters": (dict(body={"text": "Roméo"}), 400, "'é'"),
    "empty": (dict(body={"text": ""}), 400, "the prompt is empty"),
    "no length": (dict(data=b"", headers={"Transfer-Encoding": "chunked"}), 411, "Content-Length"),
    "too large": (dict(body={"text": "a" * MAX_BODY_BYTES}), 413, "more than the limit"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_trace_requests_get_a_4xx_json_error_and_the_server_keeps_serving(inspector, case):
    request, status, message = BAD_REQUESTS[case]
    got_status, answer = call(inspector.url, "/api/trace", **request)
    assert got_status == status
    assert message in answer["error"]
    assert call(inspector.url, "/api/models")[0] == 200


@pytest.mark.parametrize(("path", "body", "status", "message"), [
    ("/api/generate", {"text": PROMPT, "top_k": 0}, 400, "top-k must be at least 1"),
    ("/api/generate", {"text": PROMPT, "temperature": -1}, 400, "temperature must be a number >= 0"),
    ("/api/generate", {"text": PROMPT, "max_new_tokens": MAX_NEW_TOKENS + 1}, 400, "capped at"),
    ("/api/generate", {"text": "a" * 65}, 400, "more than the 64 tokens"),
    ("/api/generate", {"text": PROMPT, "seed": 2**64}, 400, "seed must be in 0..2**64 - 1"),
    ("/api/generate", {"text": PROMPT, "top_p": float("nan")}, 400, "top-p must be in (0, 1]"),
    ("/api/attention", {"text": PROMPT, "layer": 2}, 400, "layer must be in 0..1"),
    ("/api/nothing", {"text": PROMPT}, 404, "no endpoint at /api/nothing"),
])
def test_bad_requests_to_other_endpoints_get_a_4xx_json_error(inspector, path, body, status, message):
    got_status, answer = call(inspector.url, path, body)
    assert got_status == status
    assert message in answer["error"]


@pytest.mark.parametrize(("request_line", "status"), [
    (b"\x00\x01 garbage", 400), (b"GET / HTTP/banana", 400), (b"GET / HTTP/1.1 extra", 400),
    (b"\x00\x01\x02 / HTTP/1.1", 405), (b"DELETE /api/trace HTTP/1.1", 405),
])
def test_a_garbled_request_gets_a_json_error_and_the_server_keeps_serving(inspector, request_line, status):
    address = urlsplit(inspector.url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as connection:
        connection.sendall(request_line + b"\r\n\r\n")
        answer = connection.makefile("rb").read()
    status_line, rest = answer.split(b"\r\n", 1)
    assert status_line.startswith(b"HTTP/1.0 %d " % status)
    assert "error" in json.loads(rest.split(b"\r\n\r\n", 1)[1])
    assert call(inspector.url, "/api/models")[0] == 200


def test_the_page_and_its_files_are_served(inspector):
    for path, content_type in [("/", "text/html"), ("/app.js", "text/javascript"), ("/style.css", "text/css")]:
        address = urlsplit(inspector.url)
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
        connection.request("GET", path)
        response = connection.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type").startswith(content_type)
        assert response.read() == (ROOT / "inspector" / ("index.html" if path == "/" else path[1:])).read_bytes()
        connection.close()
    assert call(inspector.url, "/../model.py")[0] == 404


def rss_bytes(pid: int) -> int:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads memory use from Linux's /proc")
def test_200_requests_in_a_loop_all_answer_and_memory_stays_flat(inspector):
    """A load check: every kind of request, 200 in all, none failing; the server's resident memory after
    them is within 50 MB of what it was after a warm-up round (a leak of even one trace per request
    would be several times that)."""
    requests = [
        ("/api/trace", {"model": 0, "text": PROMPT}, 200),
        ("/api/trace", {"model": 1, "text": PROMPT, "top_n": 50, "logits": True}, 200),
        ("/api/attention", {"model": 1, "text": PROMPT, "layer": 0}, 200),
        ("/api/generate", {"text": PROMPT, "max_new_tokens": 20, "seed": 1}, 200),
        ("/api/trace", {"text": "Roméo"}, 400),
    ]
    def round_of(count: int) -> None:
        for number in range(count):
            path, body, status = requests[number % len(requests)]
            got_status, answer = call(inspector.url, path, body)
            assert got_status == status, (number, path, answer)
    round_of(20)
    warm = rss_bytes(inspector.process.pid)
    round_of(180)
    assert rss_bytes(inspector.process.pid) - warm < 50 * 2**20
    assert inspector.process.poll() is None


# ----------------------------------------------------------------------------------------------------
# Only the page itself: not other sites' pages, not other names for the port, not stalled clients


def served_host(url: str) -> str:
    address = urlsplit(url)
    return f"{address.hostname}:{address.port}"


def raw_answer(url: str, request: bytes) -> tuple[int, dict]:
    """Send a request byte for byte, as no well-behaved client would; return the status and JSON answer."""
    address = urlsplit(url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as connection:
        connection.sendall(request)
        answer = connection.makefile("rb").read()
    head, body = answer.split(b"\r\n\r\n", 1)
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize("host", ["evil.example", "attacker.example:{port}", "127.0.0.1.attacker.example:{port}",
                                  "localhost:{other_port}"])
def test_a_request_naming_another_host_is_refused(inspector, host):
    """A DNS-rebinding page points its own domain at 127.0.0.1: its requests reach the port, but the
    browser names that domain in Host."""
    port = urlsplit(inspector.url).port
    host = host.format(port=port, other_port=port + 1)
    for path, body in [("/", None), ("/app.js", None), ("/api/models", None),
                       ("/api/generate", {"text": PROMPT, "max_new_tokens": 3})]:
        status, answer = call(inspector.url, path, body, headers={"Host": host})
        assert status == 403, path
        assert f"not Host {host!r}" in answer["error"] and f"127.0.0.1:{port}" in answer["error"]


@pytest.mark.parametrize("host_lines", [b"", b"Host: %s\r\nHost: %s\r\n"])
def test_a_request_without_one_host_is_refused(inspector, host_lines):
    host = served_host(inspector.url).encode()
    status, answer = raw_answer(inspector.url, b"GET /api/models HTTP/1.1\r\n" + host_lines.replace(b"%s", host)
                                + b"\r\n")
    assert status == 403
    assert "this server answers requests for Host" in answer["error"]


def test_a_cross_site_text_plain_post_gets_no_stream(inspector):
    """What any web page can send from the user's browser without asking the server first: refused."""
    port = urlsplit(inspector.url).port
    for host in ["evil.example", f"attacker.example:{port}"]:
        status, answer = call(inspector.url, "/api/generate", {"text": PROMPT, "max_new_tokens": 3},
                              headers={"Host": host, "Origin": f"http://{host}", "Content-Type": "text/plain"})
        assert status == 403
        assert "error" in answer


def test_a_cross_site_json_fetch_is_not_granted_its_preflight(inspector):
    """A fetch with Content-Type: application/json from another origin asks first (OPTIONS); without an
    Access-Control-Allow-Origin answer the browser never sends it."""
    address = urlsplit(inspector.url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    connection.request("OPTIONS", "/api/generate", headers={"Origin": "http://evil.example",
                                                            "Access-Control-Request-Method": "POST",
                                                            "Access-Control-Request-Headers": "content-type"})
    response = connection.getresponse()
    assert response.status == 405
    assert response.getheader("Access-Control-Allow-Origin") is None
    connection.close()


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://localhost:{port}", "https://127.0.0.1:{port}"])
def test_a_post_from_a_page_of_another_origin_is_refused(inspector, origin):
    origin = origin.format(port=urlsplit(inspector.url).port)
    status, answer = call(inspector.url, "/api/trace", {"text": PROMPT}, headers={"Origin": origin})
    assert status == 403
    assert f"only, not for one from {origin}" in answer["error"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", None])
def test_a_post_not_sent_as_json_is_refused(inspector, content_type):
    status, answer = call(inspector.url, "/api/trace", {"text": PROMPT}, headers={"Content-Type": content_type})
    assert status == 415
    assert "Content-Type: application/json" in answer["error"]


@pytest.mark.parametrize("name", ["127.0.0.1", "localhost", "LocalHost"])
def test_the_pages_own_requests_are_answered_under_each_loopback_name(inspector, name):
    host = f"{name}:{urlsplit(inspector.url).port}"
    page = {"Host": host, "Origin": f"http://{host}", "Content-Type": "application/json; charset=utf-8"}
    status, lines = call(inspector.url, "/api/generate", {"text": PROMPT, "max_new_tokens": 3, "seed": 1},
                         headers=page)
    assert status == 200 and lines[-1]["reason"] == "length"
    status, answer = call(inspector.url, "/api/models", headers={"Host": host})
    assert status == 200 and len(answer["models"]) == 2
    address = urlsplit(inspector.url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    connection.request("GET", "/", headers={"Host": host})
    assert connection.getresponse().status == 200
    connection.close()


def test_on_every_address_any_ip_address_names_the_server_and_no_domain_does():
    """With --host 0.0.0.0 the page is opened at one of the machine's IP addresses, which no rebinding
    page can send as its Host; on the default port 80 a browser leaves the port out."""
    every_address = ServedHosts.of("0.0.0.0", 8765)
    for host in ["127.0.0.1:8765", "localhost:8765", "192.168.1.5:8765", "[fe80::1]:8765"]:
        assert every_address.accept(host), host
    for host in ["evil.example:8765", "192.168.1.5.evil.example:8765", "192.168.1.5:9000", "192.168.1.5"]:
        assert not every_address.accept(host), host
    assert not ServedHosts.of("127.0.0.1", 8765).accept("192.168.1.5:8765")
    assert ServedHosts.of("127.0.0.1", 80).accept("localhost")
    assert str(ServedHosts.of("localhost", 8765)) == "127.0.0.1:8765, localhost:8765 or [::1]:8765"


def post_bytes(url: str, path: str, body: dict) -> bytes:
    """A POST request as the page sends it, byte for byte."""
    data = json.dumps(body).encode()
    return (b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % (path.encode(), served_host(url).encode(), len(data)) + data)


def stalled_client(url: str) -> socket.socket:
    """A connection that sends the headers and part of the body of a request, then nothing."""
    address = urlsplit(url)
    connection = socket.create_connection((address.hostname, address.port), timeout=30)
    connection.sendall(post_bytes(url, "/api/trace", {"text": PROMPT})[:-20])
    return connection


def test_a_stalled_client_is_dropped_after_the_timeout_and_others_are_served_meanwhile(inspector):
    start = time.monotonic()
    with stalled_client(inspector.url) as stalled:
        assert call(inspector.url, "/api/models")[0] == 200
        assert time.monotonic() - start < READ_TIMEOUT_SECONDS  # it did not wait for the stalled one
        assert stalled.recv(1) == b""  # closed by the server, unanswered
        waited = time.monotonic() - start
    assert READ_TIMEOUT_SECONDS - 0.5 < waited < READ_TIMEOUT_SECONDS + 5


def thread_count(pid: int) -> int:
    """Threads of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


def settled_thread_count(pid: int, quiet_seconds: float = 0.5, at_most_seconds: float = 10.0) -> int:
    """Threads of a process once none has started or ended for quiet_seconds: a thread that served an
    earlier test's request may still be finishing, and counted as idle it would be missed later."""
    count, since, deadline = thread_count(pid), time.monotonic(), time.monotonic() + at_most_seconds
    while time.monotonic() - since < quiet_seconds and time.monotonic() < deadline:
        time.sleep(0.05)
        if thread_count(pid) != count:
            count, since = thread_count(pid), time.monotonic()
    return count


def wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="counts threads in Linux's /proc")
def test_stalled_clients_hold_at_most_the_cap_of_threads_and_the_server_still_answers(inspector):
    """With one worker free a request is answered at once; with every worker held by a stalled client
    the next connections wait, unanswered, and are served once the stalled ones are dropped. The
    server's threads never grow past its idle ones plus MAX_CONNECTIONS."""
    pid = inspector.process.pid
    idle = settled_thread_count(pid)
    stalled = []
    try:
        stalled += [stalled_client(inspector.url) for _ in range(MAX_CONNECTIONS - 1)]
        assert wait_for(lambda: thread_count(pid) >= idle + MAX_CONNECTIONS - 1, seconds=3)
        start = time.monotonic()
        assert call(inspector.url, "/api/models")[0] == 200
        assert time.monotonic() - start < 2
        stalled += [stalled_client(inspector.url) for _ in range(8)]  # one takes the last worker; 7 wait
        assert not wait_for(lambda: thread_count(pid) > idle + MAX_CONNECTIONS, seconds=1)
        start = time.monotonic()
        assert call(inspector.url, "/api/models")[0] == 200  # once the first stalled ones are dropped
        assert time.monotonic() - start < READ_TIMEOUT_SECONDS + 5
        assert thread_count(pid) <= idle + MAX_CONNECTIONS
    finally:
        for connection in stalled:
            connection.close()


def test_a_generation_stream_outlasts_the_read_timeout(inspector):
    """The timeout counts a wait for the client only: a stream that runs, and whose reader pauses,
    for longer than READ_TIMEOUT_SECONDS is sent to its end."""
    response = open_stream(inspector.url, {"text": PROMPT, "max_new_tokens": 300, "top_n": 50, "seed": 2})
    assert json.loads(response.readline())["type"] == "start"
    time.sleep(READ_TIMEOUT_SECONDS + 1)
    assert json.loads(response.read().splitlines()[-1]) == {"type": "end", "reason": "length", "steps": 300,
                                                            "text": ""}


@pytest.fixture
def inspector_console(small_checkpoints, tmp_path):
    """An inspector of its own, its console (stderr) written to a file: (its URL, that file)."""
    console = tmp_path / "console.txt"
    with console.open("w") as stderr:
        process = subprocess.Popen([sys.executable, "inspect_model.py", "--port", "0", "--device", "cpu",
                                    "--ckpt", str(small_checkpoints[0])], cwd=ROOT, stdout=subprocess.PIPE,
                                   stderr=stderr, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        match = re.search(r"http://\S+/", process.stdout.readline())
        assert match, f"inspect_model.py did not start: {console.read_text()}"
        yield match.group(0), console
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_clients_that_leave_are_one_line_each_on_the_console_never_a_traceback(inspector_console):
    url, console = inspector_console
    leaving = [stalled_client(url) for _ in range(20)]
    for connection in leaving:
        connection.close()  # halfway through the body
    address = urlsplit(url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as streaming:
        streaming.sendall(post_bytes(url, "/api/generate", {"text": PROMPT, "max_new_tokens": MAX_NEW_TOKENS,
                                                             "top_n": 50}))
        answer = streaming.makefile("rb")
        assert any(b'"type": "token"' in answer.readline() for _ in range(20))
        answer.close()
    # left mid-stream, the rest unread: the server's next writes fail
    assert wait_for(lambda: console.read_text().count("connection dropped") >= len(leaving), seconds=5)
    assert call(url, "/api/generate", {"text": PROMPT, "max_new_tokens": 3})[0] == 200
    log = console.read_text()
    assert "Traceback" not in log
    assert log.count("connection dropped") == len(leaving)
    assert log.count("\n") == len(leaving) + 1  # one line each, after the model's line at the start


def test_a_port_in_use_is_one_clear_error(small_checkpoints):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "inspect_model.py", "--ckpt", str(small_checkpoints[0]),
                                 "--port", str(port), "--device", "cpu"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: port {port} on 127.0.0.1 is already in use")
    assert len(result.stderr.splitlines()) == 1


def test_a_missing_checkpoint_is_one_clear_error(tmp_path):
    result = subprocess.run([sys.executable, "inspect_model.py", "--out-dir", str(tmp_path), "--device", "cpu"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == f"error: no checkpoint at {tmp_path / 'best.pt'}: train one first " \
                            "(uv run train.py) or pass --ckpt PATH\n"
