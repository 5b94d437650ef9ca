"""
Look inside a trained tinygpt model: a local web page that shows what it computes, token by token.

    uv run inspect_model.py                                # out/best.pt at http://127.0.0.1:8765/
    uv run inspect_model.py --ckpt out-vanilla/best.pt --ckpt out-modern/best.pt   # side by side
    uv run inspect_model.py --out-dir out --port 9000 --open

The page (inspector/index.html, style.css, app.js: plain files, no build step, works offline) shows,
for a prompt: the tokens; at a chosen position, the next-token probabilities, their entropy and the
rank of the token that really came next; each head's attention weights; what every layer would
predict if the model stopped there (the "logit lens"); generation, streamed, with the distribution
before and after temperature, top-k and top-p at each step; and two checkpoints side by side with
their per-token losses. docs/inspector.md explains how to read each view and documents the JSON API.

The file reads top to bottom: trace() and logit_lens(), the model side; then the JSON each endpoint
returns; then the HTTP server (the standard library's, so the core install stays torch + numpy); then
the command line.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import math
import socket
import sys
import threading
import traceback
import webbrowser
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch
from torch.nn import functional as F

from generate import check_sampling_settings, filter_logits, generate_tokens, load
from machinery.device import DEVICES, pick_device
from machinery.generation import EMPTY_PROMPT, StreamDecoder
from machinery.guards import ArgumentParser
from model import GPT
from tokenizer import Tokenizer, bits_per_char

DEFAULT_PORT = 8765
PAGE_DIR = Path(__file__).resolve().parent / "inspector"
PAGE_FILES = {"/": "index.html", "/style.css": "style.css", "/app.js": "app.js"}
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
                 ".js": "text/javascript; charset=utf-8"}
# Limits that keep one request from tying up the server. The prompt limit is the model's context.
MAX_BODY_BYTES = 64 * 1024
MAX_NEW_TOKENS = 1000
DEFAULT_TOP_N = 10  # candidates listed per position unless a request asks for another number
MAX_TOP_N = 50
MAX_LOGITS = 2_000_000  # most numbers /api/trace returns as raw logits (tokens x vocabulary)
LENS_TOP_N = 5  # candidates listed per layer and position in the logit lens
DIGITS = 5  # decimals kept for attention weights in JSON: more than any display needs, far fewer bytes
# How long the server waits on a client, per read or write of its socket. A browser sends its request
# at once, so a client silent for this long while the server reads the request line, headers or body
# has stalled and is dropped. The answer gets longer: the time between two lines of a generation
# stream is not counted (the socket waits only while a write is blocked), but a client that takes
# none of the answer for a minute has gone.
READ_TIMEOUT_SECONDS = 5
WRITE_TIMEOUT_SECONDS = 60
# Requests served at once, one thread each; a connection beyond them waits in the listen queue until
# one ends (a stalled one is dropped after READ_TIMEOUT_SECONDS of silence). One page needs a handful.
MAX_CONNECTIONS = 32
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
ANY_ADDRESS = ("0.0.0.0", "")  # --host values that listen on every address of the machine


# ----------------------------------------------------------------------------------------------------
# The model side: every intermediate result of one forward pass


@dataclass
class Trace:
    """What the model computes for one sequence of T tokens."""

    logits: torch.Tensor  # (T, vocab): the output at every position, as GPT.forward returns it
    attention: torch.Tensor  # (n_layer, n_head, T, T): softmax weights; row = query, column = key
    residual: torch.Tensor  # (n_layer + 1, T, n_embd): the stream after the embeddings and after each block


@torch.no_grad()
def trace(model: GPT, ids: list[int]) -> Trace:
    """Run the model on one sequence of token ids and return its logits, attention weights and residual
    streams, in float32 on the CPU.

    Attention runs through the hand-written path (softmax(q k^T / sqrt(hs)) with the causal mask), so
    the weights are the ones the formula defines; PyTorch's fused kernel never materialises them. They
    are read by forward hooks on each block's attn_dropout (the identity in eval mode), the residual
    streams by hooks on the embedding dropout and on each Block. The model's attention path, mode and
    hooks are as they were afterwards.
    """
    attention: list[torch.Tensor] = []
    residual: list[torch.Tensor] = []

    def keep_output(store: list[torch.Tensor]):
        """A forward hook that stores the module's output for the batch's one sequence."""
        return lambda module, inputs, output: store.append(output[0].float().cpu())

    blocks = model.transformer.h
    hooks = [model.transformer.drop.register_forward_hook(keep_output(residual))]
    for block in blocks:
        hooks.append(block.attn.attn_dropout.register_forward_hook(keep_output(attention)))
        hooks.append(block.register_forward_hook(keep_output(residual)))
    paths = [(block.attn.fused, block.attn.fused_in_eager_inference) for block in blocks]
    was_training = model.training
    try:
        model.eval()  # no dropout: in training mode the captured weights would be randomly zeroed
        for block in blocks:
            block.attn.fused = block.attn.fused_in_eager_inference = False
        device = next(model.parameters()).device
        logits, _ = model(torch.tensor([ids], dtype=torch.long, device=device))
    finally:
        for hook in hooks:
            hook.remove()
        for block, (fused, fused_in_eager_inference) in zip(blocks, paths, strict=True):
            block.attn.fused, block.attn.fused_in_eager_inference = fused, fused_in_eager_inference
        model.train(was_training)
    T, config = len(ids), model.config
    # A model with no blocks (n_layer 0, the ladder's bigram network) has no attention to show.
    weights = torch.stack(attention) if attention else torch.zeros(0, config.n_head, T, T)
    return Trace(logits[0].float().cpu(), weights, torch.stack(residual))


@torch.no_grad()
def logit_lens(model: GPT, residual: torch.Tensor) -> torch.Tensor:
    """What the model would predict if it stopped at this residual stream (..., n_embd): the final norm
    and the output head applied to it, (..., vocab) in float32 on the model's device. On the last
    layer's stream this is exactly the model's output."""
    weight = model.lm_head.weight
    return model.lm_head(model.transformer.ln_f(residual.to(weight.device, weight.dtype))).float()


# ----------------------------------------------------------------------------------------------------
# What each endpoint returns, as plain JSON-ready Python values


class RequestError(Exception):
    """A request the server refuses: its HTTP status and a one-line message saying what to change."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST):
        super().__init__(message)
        self.status = status


@dataclass
class LoadedModel:
    """One checkpoint being inspected."""

    name: str  # the path it was loaded from
    model: GPT
    tokenizer: Tokenizer
    # One computation at a time per model: trace() switches the attention path and adds hooks, which a
    # generation step running at the same moment would see.
    lock: threading.Lock = field(default_factory=threading.Lock)

    def describe(self) -> dict:
        config = self.model.config
        return {
            "name": self.name,
            "architecture": f"{config.norm}, {config.mlp}, {config.pos} positions, "
                            f"{config.n_layer} layers x {config.n_head} heads, {config.n_embd} wide",
            "parameters": self.model.num_params(),
            "n_layer": config.n_layer,
            "n_head": config.n_head,
            "block_size": config.block_size,
            "tokenizer": self.tokenizer.name,
            "vocab_size": self.tokenizer.vocab_size,
        }

    def token_text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    def tokens(self, ids: list[int]) -> list[dict]:
        return [{"id": i, "text": self.token_text(i)} for i in ids]

    def encode(self, text: str) -> list[int]:
        """The token ids of a prompt, refused with a clear message if the model cannot read all of it."""
        unknown = self.tokenizer.unknown_chars(text)
        if unknown:
            raise RequestError(f"the text has {len(unknown)} character(s) that are not in the "
                               f"{self.tokenizer.vocab_size}-token vocabulary of {self.name}: "
                               f"{', '.join(repr(c) for c in unknown[:20])}; remove them")
        ids = self.tokenizer.encode(text)
        if not ids:
            raise RequestError(EMPTY_PROMPT)
        block_size = self.model.config.block_size
        if len(ids) > block_size:
            raise RequestError(f"the text is {len(ids)} tokens, more than the {block_size} tokens of context "
                               f"{self.name} was trained on; the inspector refuses it rather than cut it: shorten it")
        return ids

    def candidates(self, log_probs: torch.Tensor, top_n: int) -> list[list[dict]]:
        """The top_n most likely tokens of each row of log-probabilities (T, vocab), most likely first."""
        top = torch.topk(log_probs, min(top_n, log_probs.size(-1)), dim=-1)
        return [[{"id": i, "text": self.token_text(i), "prob": math.exp(lp)} for i, lp in zip(ids, lps, strict=True)]
                for ids, lps in zip(top.indices.tolist(), top.values.tolist(), strict=True)]


def next_token_scores(log_probs: torch.Tensor, ids: list[int]) -> tuple[list[float], list[int]]:
    """The log-probability and the rank (1: the most likely) that each position's row of log_probs
    (T, vocab) gives the token that really follows it: T - 1 of each, the last token has no follower."""
    following = torch.tensor(ids[1:], dtype=torch.long)[:, None]
    log_prob = log_probs[:-1].gather(-1, following)  # (T - 1, 1)
    rank = (log_probs[:-1] > log_prob).sum(-1) + 1
    return log_prob[:, 0].tolist(), rank.tolist()


def trace_json(entry: LoadedModel, text: str, top_n: int, include_logits: bool) -> dict:
    """The /api/trace answer: tokens; per position the top candidates for the next token, the entropy,
    and the rank, probability and loss of the token that comes next; the logit lens of every layer;
    the loss over the text."""
    ids = entry.encode(text)
    if include_logits and len(ids) * entry.tokenizer.vocab_size > MAX_LOGITS:
        raise RequestError(f"the raw logits of {len(ids)} tokens over a {entry.tokenizer.vocab_size}-token vocabulary "
                           f"are more than {MAX_LOGITS:,} numbers; ask for them on a shorter text")
    with entry.lock:
        result = trace(entry.model, ids)
    log_probs = F.log_softmax(result.logits.double(), dim=-1)  # float64: exact enough to show to 4 digits
    entropy_bits = (-(log_probs.exp() * log_probs).nansum(-1) / math.log(2)).tolist()  # 0 * log 0 counts 0
    next_log_probs, next_ranks = next_token_scores(log_probs, ids)
    top = entry.candidates(log_probs, top_n)
    positions = []
    for pos in range(len(ids)):
        following = None
        if pos + 1 < len(ids):
            following = {"id": ids[pos + 1], "text": entry.token_text(ids[pos + 1]), "rank": next_ranks[pos],
                         "prob": math.exp(next_log_probs[pos]), "loss": -next_log_probs[pos]}
        positions.append({"top": top[pos], "entropy_bits": entropy_bits[pos], "next": following})

    lens = {"layers": ["embeddings"] + [f"block {i + 1}" for i in range(len(result.residual) - 1)],
            "top": [], "next_prob": [], "next_rank": [], "residual_norm": result.residual.norm(dim=-1).tolist()}
    for stream in result.residual:  # one layer at a time: (T, vocab) each, never (layers, T, vocab)
        layer_log_probs = F.log_softmax(logit_lens(entry.model, stream).cpu().double(), dim=-1)
        layer_next_log_probs, layer_next_ranks = next_token_scores(layer_log_probs, ids)
        lens["top"].append(entry.candidates(layer_log_probs, LENS_TOP_N))
        lens["next_prob"].append([math.exp(log_prob) for log_prob in layer_next_log_probs])
        lens["next_rank"].append(layer_next_ranks)

    total_nats = -sum(next_log_probs)
    predicted_chars = len(entry.tokenizer.decode(ids[1:]))
    answer = {
        "model": entry.describe(),
        "tokens": entry.tokens(ids),
        "positions": positions,
        "lens": lens,
        "loss": {"mean": total_nats / len(next_log_probs) if next_log_probs else None,
                 "bits_per_char": bits_per_char(total_nats, predicted_chars) if predicted_chars else None},
    }
    if include_logits:
        answer["logits"] = result.logits.tolist()
    return answer


def attention_json(entry: LoadedModel, text: str, layer: int) -> dict:
    """The /api/attention answer: every head's weights in one layer, row i holding the weights from
    position i to positions 0..i (the rest are zero: the causal mask)."""
    if not 0 <= layer < entry.model.config.n_layer:
        raise RequestError(f"layer must be in 0..{entry.model.config.n_layer - 1} for {entry.name}, not {layer}")
    ids = entry.encode(text)
    with entry.lock:
        weights = trace(entry.model, ids).attention[layer]  # (n_head, T, T)
    rounded = torch.round(weights.double(), decimals=DIGITS)
    return {"layer": layer, "tokens": entry.tokens(ids),
            "heads": [[row[:query + 1] for query, row in enumerate(head.tolist())] for head in rounded]}


@dataclass
class GenerationSettings:
    """What /api/generate was asked for, checked."""

    max_new_tokens: int
    temperature: float
    top_k: int | None
    top_p: float | None
    seed: int | None
    top_n: int


def generation_steps(entry: LoadedModel, ids: list[int], settings: GenerationSettings,
                     stop: threading.Event) -> Iterator[dict]:
    """The /api/generate stream after the prompt ids: one object per new token with the text it adds,
    the candidates with their probability before filtering (the model's softmax) and after it
    (temperature, top-k and top-p: what the token is drawn from), and the sampled token. Ends early
    when `stop` is set."""
    device = next(entry.model.parameters()).device
    generator = None if settings.seed is None else torch.Generator(device=device).manual_seed(settings.seed)
    idx = torch.tensor([ids], dtype=torch.long, device=device)
    steps = generate_tokens(entry.model, idx, settings.max_new_tokens, settings.temperature, settings.top_k,
                            settings.top_p, use_kv_cache=True, generator=generator)
    decoder = StreamDecoder(entry.tokenizer)
    yield {"type": "start", "tokens": entry.tokens(ids)}
    for step in range(settings.max_new_tokens):
        if stop.is_set():
            yield {"type": "end", "reason": "stopped", "steps": step}
            return
        with entry.lock:  # per step, so traces of other requests can run between two tokens
            token, logits = next(steps)
        token_id = token.item()
        filtered = filter_logits(logits, settings.temperature, settings.top_k, settings.top_p)
        before = F.softmax(logits[0].cpu().double(), dim=-1)  # on the CPU: MPS has no float64
        after = F.softmax(filtered[0].cpu().double(), dim=-1)
        shown = torch.topk(before, min(settings.top_n, before.numel())).indices.tolist()
        if token_id not in shown:  # a wild draw from far down the list is shown too
            shown.append(token_id)
        yield {"type": "token", "step": step, "id": token_id, "token": entry.token_text(token_id),
               "text": decoder.push(token_id), "kept": int((after > 0).sum()),
               "candidates": [{"id": i, "text": entry.token_text(i), "before": p_before, "after": p_after}
                              for i, p_before, p_after in zip(shown, before[shown].tolist(), after[shown].tolist(),
                                                              strict=True)]}
    yield {"type": "end", "reason": "length", "steps": settings.max_new_tokens, "text": decoder.flush()}


# ----------------------------------------------------------------------------------------------------
# The server


REQUIRED = object()  # the default of a field the request must give
INT, NUMBER, TEXT, BOOL = (int,), (int, float), (str,), (bool,)  # the JSON types a field may have


def read_fields(body: dict, schema: dict[str, tuple[type | tuple[type, ...], object]]) -> dict:
    """The fields of a request body, checked against schema {name: (types, default)}; a default of
    `REQUIRED` means the field must be given, and null stands for the default. Unknown fields are
    refused so a typo is never ignored."""
    unknown = set(body) - set(schema)
    if unknown:
        raise RequestError(f"unknown field(s) {', '.join(sorted(unknown))}; expected {', '.join(schema)}")
    values = {}
    for name, (types, default) in schema.items():
        value = default if body.get(name) is None else body[name]
        if value is REQUIRED:
            raise RequestError(f"the field {name!r} is missing")
        # bool is an int in Python, but `"top_k": true` is a mistake, not 1
        if value is not None and (not isinstance(value, types) or isinstance(value, bool) and bool not in types):
            raise RequestError(f"{name} must be {' or '.join(t.__name__ for t in types)}, "
                               f"not {type(value).__name__}")
        values[name] = value
    return values


def check_top_n(top_n: int) -> None:
    if not 1 <= top_n <= MAX_TOP_N:
        raise RequestError(f"top_n must be in 1..{MAX_TOP_N}, not {top_n}")


@dataclass
class ServedHosts:
    """The Host headers that name this server. A browser sends the host and port of the URL it was
    given, so a page of another site that points its own domain at 127.0.0.1 (DNS rebinding) names
    that domain and is refused, though its requests reach the port."""

    names: list[str]  # "host:port" for the loopback names and the address the server listens on
    any_ip: bool  # listening on every address (0.0.0.0): any IP address with the port names it too
    port: int

    @classmethod
    def of(cls, host: str, port: int) -> ServedHosts:
        listened = f"[{host}]" if ":" in host else host  # an IPv6 address is in brackets in a URL
        names = [f"{name}:{port}" for name in dict.fromkeys((*LOOPBACK_NAMES, listened.lower()))
                 if name not in ANY_ADDRESS]
        return cls(names, host in ANY_ADDRESS, port)

    def accept(self, host: str) -> bool:
        host = host.lower()
        if self.port == 80:  # the default port, which browsers leave out of Host
            host = host.removesuffix(":80") + ":80"
        if host in self.names:
            return True
        name, _, port = host.rpartition(":")
        if not self.any_ip or port != str(self.port):
            return False
        try:  # any IP address is safe to accept: a rebinding page can only name its own domain
            ipaddress.ip_address(name.strip("[]"))
        except ValueError:
            return False
        return True

    def __str__(self) -> str:
        names = self.names + ([f"any IP address with port {self.port}"] if self.any_ip else [])
        return ", ".join(names[:-1]) + " or " + names[-1]


class Inspector:
    """The loaded models and the generations running, shared by every request thread."""

    def __init__(self, models: list[LoadedModel]):
        self.models = models
        self.generations: dict[str, threading.Event] = {}  # client -> its running generation's stop flag
        self.generations_lock = threading.Lock()

    def model(self, index: int) -> LoadedModel:
        if not 0 <= index < len(self.models):
            raise RequestError(f"model must be in 0..{len(self.models) - 1}, not {index}", HTTPStatus.NOT_FOUND)
        return self.models[index]

    def start_generation(self, client: str) -> threading.Event:
        """Register a generation for this client; one already running for it is stopped first, so each
        client (a browser tab) has at most one generation at a time."""
        stop = threading.Event()
        with self.generations_lock:
            previous = self.generations.get(client)
            if previous is not None:
                previous.set()
            self.generations[client] = stop
        return stop

    def end_generation(self, client: str, stop: threading.Event) -> None:
        with self.generations_lock:
            if self.generations.get(client) is stop:
                del self.generations[client]


class InspectorHandler(BaseHTTPRequestHandler):
    """Serves the page's files and the JSON API to the page itself, and only to it; every refusal is a
    JSON {"error": "..."}."""

    server_version = "tinygpt-inspector"
    inspector: Inspector  # set on the subclass that serve() builds
    served_hosts: ServedHosts  # set there too, once the port is known
    timeout = READ_TIMEOUT_SECONDS  # applied to the socket before the request line is read
    streaming = False  # True once a generation stream has sent its status line

    def do_GET(self) -> None:
        self.respond(self.get)

    def do_POST(self) -> None:
        self.respond(self.post)

    def respond(self, handle: Callable[[], None]) -> None:
        """handle() the request if its Host names this server. A refusal is sent as JSON; a client that
        has gone (closed the connection, or silent past the timeout) is one line on the console; a bug
        is reported to the page and on the console, and the server keeps serving."""
        try:
            self.check_host()
            handle()
        except RequestError as error:
            self.send_json({"error": str(error)}, error.status)
        except (ConnectionError, TimeoutError) as error:  # nobody to answer
            self.close_connection = True
            waited = self.connection.gettimeout()
            reason = f"no progress for {waited:g} s" if isinstance(error, TimeoutError) else error.strerror or error
            self.log_error("connection dropped: %s", reason)
        except Exception as error:  # a bug
            traceback.print_exc()
            message = f"internal error: {type(error).__name__}: {error}"
            if self.streaming:  # the status line is sent already: the stream's last line says it
                self.wfile.write(json.dumps({"type": "error", "error": message}).encode() + b"\n")
            else:
                self.send_json({"error": message}, HTTPStatus.INTERNAL_SERVER_ERROR)

    def check_host(self) -> None:
        """Refuse a request whose Host header does not name this server (see ServedHosts)."""
        hosts = self.headers.get_all("Host") or []
        if len(hosts) != 1 or not self.served_hosts.accept(hosts[0]):
            given = f"Host {hosts[0]!r}" if len(hosts) == 1 else f"{len(hosts)} Host headers"
            raise RequestError(f"this server answers requests for Host {self.served_hosts}, not {given}; "
                               f"open the page at http://{self.served_hosts.names[0]}/", HTTPStatus.FORBIDDEN)

    def check_origin(self) -> None:
        """Refuse a request sent by a page of another origin. A browser names the page's origin on every
        cross-site POST, and can send one without asking the server first (a text/plain form or fetch),
        so the server must refuse it itself."""
        origin = self.headers.get("Origin")
        served = f"http://{self.headers['Host'].lower()}"
        if origin is not None and origin.lower() != served:
            raise RequestError(f"POST requests are answered for the page at {served} only, not for one "
                               f"from {origin}", HTTPStatus.FORBIDDEN)

    def get(self) -> None:
        self.connection.settimeout(WRITE_TIMEOUT_SECONDS)  # the request is read: from here on the server writes
        path = self.path.split("?", 1)[0]
        if path == "/api/models":
            self.send_json({"models": [entry.describe() for entry in self.inspector.models],
                            "limits": {"max_new_tokens": MAX_NEW_TOKENS, "max_top_n": MAX_TOP_N,
                                       "max_logits": MAX_LOGITS, "max_body_bytes": MAX_BODY_BYTES,
                                       "long_prompts": "refused"}})
        elif path in PAGE_FILES:
            self.send_page_file(PAGE_DIR / PAGE_FILES[path])
        else:
            self.send_json({"error": f"nothing at {path}"}, HTTPStatus.NOT_FOUND)

    def post(self) -> None:
        routes = {"/api/trace": self.post_trace, "/api/attention": self.post_attention,
                  "/api/generate": self.post_generate}
        self.check_origin()
        if self.path not in routes:
            raise RequestError(f"no endpoint at {self.path}; POST to one of {', '.join(routes)}",
                               HTTPStatus.NOT_FOUND)
        routes[self.path](self.read_body())

    def read_body(self) -> dict:
        """The request's JSON object, refused if it is missing, too large, cut short, sent as another
        Content-Type than application/json, or not JSON."""
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise RequestError("a JSON body with a Content-Length header is needed", HTTPStatus.LENGTH_REQUIRED)
        if int(length) > MAX_BODY_BYTES:
            self.close_connection = True  # the unread body must not be taken for the next request
            raise RequestError(f"the body is {int(length)} bytes, more than the limit of {MAX_BODY_BYTES}",
                               HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        data = self.rfile.read(int(length))  # each wait for the client is at most READ_TIMEOUT_SECONDS
        self.connection.settimeout(WRITE_TIMEOUT_SECONDS)  # the request is read: from here on the server writes
        if len(data) < int(length):  # the client closed the connection halfway
            raise ConnectionAbortedError(f"the client left after {len(data)} of its {int(length)} bytes")
        # Read, then refused: closing a connection with its body unread resets it, and the client may
        # lose the answer.
        if self.headers.get_content_type() != "application/json":
            raise RequestError(f"the body must be sent as Content-Type: application/json, not "
                               f"{self.headers.get_content_type()}", HTTPStatus.UNSUPPORTED_MEDIA_TYPE)
        try:
            body = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise RequestError(f"the body is not valid JSON: {error}") from error
        if not isinstance(body, dict):
            raise RequestError(f"the body must be a JSON object, not {type(body).__name__}")
        return body

    def post_trace(self, body: dict) -> None:
        fields = read_fields(body, {"model": (INT, 0), "text": (TEXT, REQUIRED), "top_n": (INT, DEFAULT_TOP_N),
                                    "logits": (BOOL, False)})
        check_top_n(fields["top_n"])
        entry = self.inspector.model(fields["model"])
        self.send_json(trace_json(entry, fields["text"], fields["top_n"], fields["logits"]))

    def post_attention(self, body: dict) -> None:
        fields = read_fields(body, {"model": (INT, 0), "text": (TEXT, REQUIRED), "layer": (INT, 0)})
        self.send_json(attention_json(self.inspector.model(fields["model"]), fields["text"], fields["layer"]))

    def post_generate(self, body: dict) -> None:
        fields = read_fields(body, {"model": (INT, 0), "text": (TEXT, REQUIRED), "max_new_tokens": (INT, 200),
                                    "temperature": (NUMBER, 1.0), "top_k": (INT, None), "top_p": (NUMBER, None),
                                    "seed": (INT, None), "top_n": (INT, DEFAULT_TOP_N),
                                    "client": (TEXT, None)})
        settings = GenerationSettings(fields["max_new_tokens"], float(fields["temperature"]), fields["top_k"],
                                      None if fields["top_p"] is None else float(fields["top_p"]), fields["seed"],
                                      fields["top_n"])
        try:
            check_sampling_settings(settings.temperature, settings.top_k, settings.top_p, settings.max_new_tokens)
        except ValueError as error:
            raise RequestError(str(error)) from error
        if settings.max_new_tokens > MAX_NEW_TOKENS:
            raise RequestError(f"max_new_tokens is capped at {MAX_NEW_TOKENS} per request, "
                               f"not {settings.max_new_tokens}")
        check_top_n(settings.top_n)
        if settings.seed is not None and not 0 <= settings.seed < 2**64:  # what torch.Generator takes
            raise RequestError(f"seed must be in 0..2**64 - 1, not {settings.seed}")
        entry = self.inspector.model(fields["model"])
        ids = entry.encode(fields["text"])  # a bad prompt is refused before the stream starts
        client = fields["client"] or self.client_address[0]
        stop = self.inspector.start_generation(client)
        try:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "application/x-ndjson")  # one JSON object per line
            self.send_header("Cache-Control", "no-store")
            self.end_headers()  # no Content-Length: the stream ends when the connection closes (HTTP/1.0)
            self.streaming = True
            for line in generation_steps(entry, ids, settings, stop):
                self.wfile.write(json.dumps(line).encode() + b"\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the page stopped reading (Stop, or a new prompt): the generation ends here
        finally:
            self.inspector.end_generation(client, stop)

    def send_json(self, value: dict, status: HTTPStatus = HTTPStatus.OK) -> None:
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def send_page_file(self, path: Path) -> None:
        body = path.read_bytes()
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", CONTENT_TYPES[path.suffix])
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a garbled request line, an unknown method) as JSON too, always
        with a status line, and an unknown method as 405 (the client's mistake) rather than 501."""
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # the request line was not understood: answer in HTTP/1.0
            self.request_version = "HTTP/1.0"
        status = HTTPStatus.METHOD_NOT_ALLOWED if code == HTTPStatus.NOT_IMPLEMENTED else HTTPStatus(code)
        self.send_json({"error": message or status.phrase}, status)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if isinstance(code, HTTPStatus):
            code = code.value
        if str(code).isdigit() and int(code) >= 400:  # only refusals are worth a line on the console
            super().log_request(code, size)


class BoundedHTTPServer(ThreadingHTTPServer):
    """http.server's one thread per connection, with at most max_connections threads at once. When
    all are busy the next connection is not accepted until one ends: it waits in the listen queue,
    and is answered then rather than refused."""

    daemon_threads = True  # Ctrl-C does not wait for open streams
    request_queue_size = 4 * MAX_CONNECTIONS  # room in the listen queue for the connections that wait

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], max_connections: int):
        super().__init__(address, handler)
        self.workers = threading.BoundedSemaphore(max_connections)

    def process_request(self, request: socket.socket, client_address: tuple[str, int]) -> None:
        self.workers.acquire()
        try:
            super().process_request(request, client_address)  # starts the thread
        except BaseException:
            self.workers.release()
            raise

    def process_request_thread(self, request: socket.socket, client_address: tuple[str, int]) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.workers.release()

    def handle_error(self, request: socket.socket, client_address: tuple[str, int]) -> None:
        """A client that left before its answer was sent is one line on the console, not a traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            print(f"{client_address[0]}:{client_address[1]} left before its answer was sent: "
                  f"{error.strerror or error}", file=sys.stderr)
        else:
            super().handle_error(request, client_address)


def serve(models: list[LoadedModel], host: str, port: int) -> ThreadingHTTPServer:
    """A server for the page and the API, bound to host:port (port 0: any free port), not yet serving.
    Raises OSError if the address cannot be bound."""
    handler = type("Handler", (InspectorHandler,), {"inspector": Inspector(models)})
    server = BoundedHTTPServer((host, port), handler, MAX_CONNECTIONS)
    handler.served_hosts = ServedHosts.of(host, server.server_address[1])
    return server


# ----------------------------------------------------------------------------------------------------
# The command line


def build_parser() -> ArgumentParser:
    """The command line; its --help is the manual."""
    parser = ArgumentParser(
        description="Serve a local web page that shows what tinygpt checkpoints compute, token by token.",
        epilog="Errors are one line on stderr, exit code 2. How to read each view: docs/inspector.md.",
    )
    parser.add_argument("--out-dir", action="append", default=[], metavar="DIR",
                        help="training output directory whose best.pt to inspect; repeat it, or mix it with "
                             "--ckpt, to put models side by side (default: out)")
    parser.add_argument("--ckpt", action="append", default=[], metavar="PATH",
                        help="checkpoint file to inspect; may be given several times")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 opens it "
                             "to the network, with no password)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port to listen on; 0 picks a free one (default: {DEFAULT_PORT})")
    parser.add_argument("--open", action="store_true", help="open the page in the default web browser")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="where to run the models (default: auto, the best found)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Load the checkpoints and serve until Ctrl-C; return the exit code (2 with one `error:` line)."""
    args = build_parser().parse_args(argv)
    paths = [Path(d) / "best.pt" for d in args.out_dir] + [Path(p) for p in args.ckpt]
    try:
        device = pick_device(args.device)
        # float32 whatever the device: the page shows probabilities to several digits and compares models.
        models = [LoadedModel(str(path), *load(path, device, "float32")) for path in paths or [Path("out/best.pt")]]
        server = serve(models, args.host, args.port)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            print(f"error: port {args.port} on {args.host} is already in use (another inspector?); "
                  "pass --port N, or --port 0 for any free port", file=sys.stderr)
        else:
            print(f"error: {error.strerror or error}", file=sys.stderr)
        return 2
    except ValueError as error:
        print("error: " + " ".join(str(error).splitlines()), file=sys.stderr)
        return 2
    host, port = server.server_address[:2]
    url = f"http://{'localhost' if host == '0.0.0.0' else host}:{port}/"  # 0.0.0.0 is every address: this one too
    for index, entry in enumerate(models):
        print(f"model {index}: {entry.name}: {entry.describe()['architecture']}", file=sys.stderr)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}: anyone who can reach this machine can use the page",
              file=sys.stderr)
    print(f"tinygpt inspector at {url} (Ctrl-C to stop)", flush=True)
    if args.open:
        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print(file=sys.stderr)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
