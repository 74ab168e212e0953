"""A fake Hugging Face Hub on 127.0.0.1 for the hub tests, and a GGUF writer to fill it.

It answers the routes ``lab.hub`` uses, the way huggingface.co does:

* ``GET /api/models?search=&filter=gguf&sort=downloads&limit=&expand=...``
* ``GET /api/models/{repo}`` and ``/api/models/{repo}/revision/{rev}`` (id, sha, siblings)
* ``GET /api/models/{repo}/tree/{rev}?recursive=true`` (size, git oid, lfs oid/size; paginated
  with a ``Link: <...>; rel="next"`` header)
* ``HEAD|GET /{repo}/resolve/{rev}/{path}``: LFS files answer 302 to ``/cdn/{sha256}`` with
  ``X-Repo-Commit``, ``X-Linked-Etag``, ``X-Linked-Size`` and ``ETag``; files in plain git are
  served directly. ``/cdn/...`` honours ``Range`` (206 + ``Content-Range``).
* errors carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``,
  ``GatedRepo``) so huggingface_hub's ``hf_raise_for_status`` classifies them.

Switches for the tests: :meth:`FakeHub.drop_once` (close the connection after N bytes, once),
:meth:`FakeHub.hold_once` (pause a whole-file download after N bytes until the test lets go),
:meth:`FakeHub.corrupt` (serve different bytes of the same length), a page size for tree
listings, and a log of every request with the bytes of body it sent.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import numpy as np


# --- GGUF files ---------------------------------------------------------------------------------


def build_gguf(*, name: str = "fake", file_type: int = 15, n_vocab: int = 512, n_embd: int = 64,
               n_layer: int = 2, n_head: int = 4, n_head_kv: int = 2, n_ctx_train: int = 2048,
               n_tokens: int = 0, split_max_tensors: int = 0) -> list[bytes]:
    """A 2-layer llama GGUF as bytes (one item per split part). Tensors are zeros (F32), so
    the file size is chosen with ``n_vocab * n_embd``; ``file_type`` is what the header says
    the quantization is (15 = Q4_K_M, 7 = Q8_0); ``n_tokens`` adds a token list to make the
    header long."""
    import gguf

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.gguf"
        w = gguf.GGUFWriter(str(path), "llama", split_max_tensors=split_max_tensors)
        w.add_name(name)
        w.add_context_length(n_ctx_train)
        w.add_embedding_length(n_embd)
        w.add_block_count(n_layer)
        w.add_feed_forward_length(2 * n_embd)
        w.add_head_count(n_head)
        w.add_head_count_kv(n_head_kv)
        w.add_layer_norm_rms_eps(1e-5)
        w.add_file_type(file_type)
        if n_tokens:
            w.add_tokenizer_model("llama")
            w.add_token_list([f"tok{i:07d}" for i in range(n_tokens)])

        def zeros(*shape: int) -> np.ndarray:
            return np.zeros(shape, dtype=np.float32)

        w.add_tensor("token_embd.weight", zeros(n_vocab, n_embd))
        for i in range(n_layer):
            w.add_tensor(f"blk.{i}.attn_norm.weight", zeros(n_embd))
            w.add_tensor(f"blk.{i}.attn_q.weight", zeros(n_embd, n_embd))
            w.add_tensor(f"blk.{i}.ffn_up.weight", zeros(2 * n_embd, n_embd))
        w.add_tensor("output_norm.weight", zeros(n_embd))
        w.add_tensor("output.weight", zeros(n_vocab, n_embd))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        parts = sorted(Path(tmp).glob("*.gguf"))
        return [p.read_bytes() for p in parts]


# --- the repository model -----------------------------------------------------------------------


@dataclass
class FakeRepo:
    repo_id: str
    files: dict[str, bytes]
    downloads: int = 0
    likes: int = 0
    last_modified: str = "2025-01-15T10:00:00.000Z"
    n_params: int | None = None
    architecture: str = "llama"
    tags: list[str] = field(default_factory=lambda: ["gguf", "text-generation"])
    gated: bool = False
    private: bool = False
    token: str | None = None  # the token that grants access (gated or private repos)
    lfs: bool = True  # False: files are in plain git (no sha256, git blob sha1 only)
    raw_tree: list[dict[str, Any]] = field(default_factory=list)  # extra entries, served as-is

    @property
    def commit(self) -> str:
        return hashlib.sha1(self.repo_id.encode()).hexdigest()

    def tree(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        folders: set[str] = set()
        for path, data in sorted(self.files.items()):
            parent = path.rsplit("/", 1)[0] if "/" in path else ""
            while parent and parent not in folders:
                folders.add(parent)
                out.append({"type": "directory", "oid": "0" * 40, "size": 0, "path": parent})
                parent = parent.rsplit("/", 1)[0] if "/" in parent else ""
            entry: dict[str, Any] = {"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": path}
            if self.lfs:
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            out.append(entry)
        return out + self.raw_tree


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Served:
    """One request the fake Hub answered."""

    method: str
    path: str
    query: dict[str, list[str]]
    range: str | None
    status: int
    body_bytes: int
    authorization: str | None
    file: str | None = None  # repo file path for resolve/cdn requests


# --- the server ---------------------------------------------------------------------------------


class FakeHub:
    """Start with ``with FakeHub() as hub:`` (or ``start()``/``stop()``); ``hub.url`` is the
    endpoint to give ``lab.hub`` as ``endpoint=`` or ``HF_ENDPOINT``."""

    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.served: list[Served] = []
        self.tree_page_size = 1000
        self._drop: dict[str, int] = {}
        self._hold: dict[str, tuple[int, threading.Event]] = {}
        self._corrupt: set[str] = set()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # setup
    def add_repo(self, repo_id: str, files: dict[str, bytes], **kwargs: Any) -> FakeRepo:
        repo = FakeRepo(repo_id, dict(files), **kwargs)
        self.repos[repo_id] = repo
        return repo

    def drop_once(self, path: str, after_bytes: int) -> None:
        """The next download of repo file ``path`` sends ``after_bytes`` then closes the socket."""
        self._drop[path] = after_bytes

    def hold_once(self, path: str, after_bytes: int) -> threading.Event:
        """The next whole-file download of ``path`` (not a Range request: header probes and
        resumes pass) sends ``after_bytes``, then waits until the returned event is set before
        sending the rest: a download that is reliably mid-way while the test acts."""
        release = threading.Event()
        self._hold[path] = (after_bytes, release)
        return release

    def corrupt(self, path: str) -> None:
        """Serve repo file ``path`` with one byte changed (same length) from now on."""
        self._corrupt.add(path)

    # inspection (each waits until no request is being answered, so the log is complete)
    def settle(self, timeout: float = 5.0) -> None:
        with self._idle:
            self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    def log(self) -> list[Served]:
        """Every request answered so far."""
        self.settle()
        with self._lock:
            return list(self.served)

    def requests_for(self, file: str) -> list[Served]:
        self.settle()
        with self._lock:
            return [s for s in self.served if s.file == file and s.method == "GET"]

    def bytes_served(self, file: str | None = None) -> int:
        self.settle()
        with self._lock:
            return sum(s.body_bytes for s in self.served if file is None or s.file == file)

    def clear_log(self) -> None:
        self.settle()
        with self._lock:
            self.served.clear()

    # lifecycle
    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeHub":
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        server = self._server
        self._thread = threading.Thread(target=lambda: server.serve_forever(poll_interval=0.02),
                                        name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _begin(self) -> None:
        with self._lock:
            self._in_flight += 1

    def _log(self, served: Served) -> None:
        with self._idle:
            self.served.append(served)
            self._in_flight -= 1
            self._idle.notify_all()


_REPO_ROUTE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/(?P<kind>revision|tree)/(?P<rev>[^/]+)(?P<rest>/.*)?)?$")
_RESOLVE_ROUTE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    # routing
    def _route(self, head: bool) -> None:
        self.fake._begin()
        split = urlsplit(self.path)
        path = unquote(split.path)
        self.query = parse_qs(split.query)
        self._file: str | None = None
        self._sent = 0
        self._status = 0
        try:
            if path == "/api/models":
                self._search()
            elif (m := _REPO_ROUTE.match(path)) is not None:
                self._repo_api(m.group("repo"), m.group("kind"), m.group("rev"))
            elif (m := _RESOLVE_ROUTE.match(split.path)) is not None:
                self._resolve(unquote(m.group("repo")), unquote(m.group("rev")), unquote(m.group("path")), head)
            elif path.startswith("/cdn/"):
                self._cdn(path[len("/cdn/"):], head)
            else:
                self._error(404, "RepoNotFound", "no such route")
        finally:
            self.fake._log(Served(self.command, path, self.query, self.headers.get("Range"), self._status,
                                  self._sent, self.headers.get("Authorization"), self._file))

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json", head: bool = False) -> None:
        self._status = status
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head and body:
            self.wfile.write(body)
            self._sent += len(body)

    def _json(self, data: Any, headers: dict[str, str] | None = None) -> None:
        self._send(200, json.dumps(data).encode(), headers)

    def _error(self, status: int, code: str, message: str, commit: str | None = None) -> None:
        headers = {"X-Error-Code": code, "X-Error-Message": message}
        if commit:
            headers["X-Repo-Commit"] = commit
        self._send(status, json.dumps({"error": message}).encode(), headers)

    def _access(self, repo: FakeRepo | None) -> bool:
        """False (and an error sent) if the request may not see ``repo``."""
        if repo is None:
            self._error(401, "RepoNotFound", "Repository not found")
            return False
        if repo.private or repo.gated:
            auth = self.headers.get("Authorization")
            if auth == f"Bearer {repo.token}":
                return True
            if repo.private:
                self._error(401, "RepoNotFound", "Repository not found")
            else:
                self._error(401 if auth is None else 403, "GatedRepo", "Access to this model is restricted")
            return False
        return True

    # routes
    def _search(self) -> None:
        q = (self.query.get("search") or [""])[0].lower()
        filters = self.query.get("filter") or []
        repos = [r for r in self.fake.repos.values()
                 if q in r.repo_id.lower() and all(f in r.tags for f in filters) and not r.private]
        if (self.query.get("sort") or [""])[0] == "downloads":
            repos.sort(key=lambda r: r.downloads, reverse=True)
        limit = int((self.query.get("limit") or ["1000"])[0])
        expand = self.query.get("expand")
        items = []
        for r in repos[:limit]:
            full = {
                "_id": r.commit[:24], "id": r.repo_id, "downloads": r.downloads, "likes": r.likes,
                "lastModified": r.last_modified, "gated": "auto" if r.gated else False,
                "private": r.private, "pipeline_tag": "text-generation", "tags": r.tags,
                "gguf": {"total": r.n_params, "architecture": r.architecture, "context_length": 2048}
                if r.n_params is not None else None,
            }
            if expand:
                full = {k: v for k, v in full.items() if k in ("_id", "id") or k in expand}
            items.append({k: v for k, v in full.items() if v is not None})
        self._json(items)

    def _repo_api(self, repo_id: str, kind: str | None, rev: str | None) -> None:
        repo = self.fake.repos.get(repo_id)
        if not self._access(repo):
            return
        assert repo is not None
        if rev is not None and rev not in ("main", repo.commit):
            self._error(404, "RevisionNotFound", "Invalid rev id")
            return
        if kind == "tree":
            entries = repo.tree()
            start = int((self.query.get("cursor") or ["0"])[0])
            size = self.fake.tree_page_size
            page = entries[start:start + size]
            headers = {}
            if start + size < len(entries):
                host, port = self.server.server_address[:2]
                nxt = f"http://{host}:{port}/api/models/{repo_id}/tree/{rev}?recursive=true&cursor={start + size}"
                headers["Link"] = f'<{nxt}>; rel="next"'
            self._json(page, headers)
            return
        self._json({
            "_id": repo.commit[:24], "id": repo.repo_id, "sha": repo.commit, "private": repo.private,
            "gated": "auto" if repo.gated else False, "downloads": repo.downloads, "likes": repo.likes,
            "lastModified": repo.last_modified, "tags": repo.tags,
            "siblings": [{"rfilename": p} for p in sorted(repo.files)],
        })

    def _resolve(self, repo_id: str, rev: str, path: str, head: bool) -> None:
        repo = self.fake.repos.get(repo_id)
        if not self._access(repo):
            return
        assert repo is not None
        self._file = path
        if rev not in ("main", repo.commit):
            self._error(404, "RevisionNotFound", "Invalid rev id", repo.commit)
            return
        data = repo.files.get(path)
        if data is None:
            self._error(404, "EntryNotFound", "Entry not found", repo.commit)
            return
        sha256 = hashlib.sha256(data).hexdigest()
        meta = {"X-Repo-Commit": repo.commit, "Accept-Ranges": "bytes"}
        if repo.lfs:
            meta.update({"X-Linked-Etag": f'"{sha256}"', "X-Linked-Size": str(len(data)),
                         "ETag": f'"{git_blob_sha1(data)}"',
                         "Location": f"/cdn/{sha256}?repo={quote(repo_id)}&path={quote(path)}"})
            self._send(302, b"", meta, head=head)
            return
        meta["ETag"] = f'"{git_blob_sha1(data)}"'
        self._body(path, data, meta, head)

    def _cdn(self, sha256: str, head: bool) -> None:
        repo_id = (self.query.get("repo") or [""])[0]
        path = (self.query.get("path") or [""])[0]
        repo = self.fake.repos.get(repo_id)
        data = repo.files.get(path) if repo else None
        if data is None or hashlib.sha256(data).hexdigest() != sha256:
            self._error(404, "EntryNotFound", "no such blob")
            return
        self._file = path
        self._body(path, data, {"ETag": f'"{sha256}"', "Accept-Ranges": "bytes"}, head)

    def _body(self, path: str, data: bytes, headers: dict[str, str], head: bool) -> None:
        if path in self.fake._corrupt:
            middle = len(data) // 2
            data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]
        start, end, status = 0, len(data) - 1, 200
        rng = self.headers.get("Range")
        if rng:
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
            if m is None or int(m.group(1)) >= len(data):
                self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                return
            start = int(m.group(1))
            end = min(int(m.group(2)), len(data) - 1) if m.group(2) else len(data) - 1
            status = 206
            headers = {**headers, "Content-Range": f"bytes {start}-{end}/{len(data)}"}
        body = data[start:end + 1]
        hold = None if head or rng else self.fake._hold.pop(path, None)
        if hold is not None:
            self._send_held(status, body, headers, *hold)
            return
        drop = None if head else self.fake._drop.pop(path, None)
        if drop is None:
            self._send(status, body, headers, content_type="application/octet-stream", head=head)
            return
        # Promise the whole body, send part of it, then hang up.
        self._promise(status, body, headers)
        self.wfile.write(body[:drop])
        self.wfile.flush()
        self._sent += min(drop, len(body))
        self.close_connection = True

    def _send_held(self, status: int, body: bytes, headers: dict[str, str], after: int,
                   release: threading.Event) -> None:
        self._promise(status, body, headers)
        self.wfile.write(body[:after])
        self.wfile.flush()
        self._sent += min(after, len(body))
        release.wait(30)
        try:
            self.wfile.write(body[after:])
            self._sent += max(0, len(body) - after)
        except OSError:  # the client hung up (a cancelled download)
            self.close_connection = True

    def _promise(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        """Send the status and headers of a whole ``body``, none of it yet."""
        self._status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
