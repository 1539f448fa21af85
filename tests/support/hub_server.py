"""A Hugging Face hub on 127.0.0.1 for tests: the real huggingface_hub client talks to it.

It answers what huggingface_hub 2.4 asks of the hub (read from its source, not guessed):

- `GET /api/models/{org}/{name}` and `.../revision/{rev}`: `HfApi.model_info` / `repo_info`
  (what `snapshot_download` calls first). With `?blobs=true` (`files_metadata=True`) every
  sibling carries `size`, `blobId` and, for LFS files, `lfs: {sha256, size, pointerSize}`.
- `GET /api/models/{org}/{name}/tree/{rev}[/{path}]?recursive=...&expand=...`:
  `list_repo_tree` (and `snapshot_download`, which lists the tree recursively by commit).
  One page, no `Link` header: the client then stops paginating.
- `HEAD` and `GET /{org}/{name}/resolve/{rev}/{path}`: `get_hf_file_metadata` (HEAD: reads
  `X-Repo-Commit`, `X-Linked-Etag` or `ETag`, `X-Linked-Size` or `Content-Length`),
  `hf_hub_download` (HEAD, then GET; resumes with `Range: bytes=N-`), `file_exists` (HEAD)
  and `get_safetensors_metadata` (GET with `Range: bytes=0-100000`, answered 206 with
  `Content-Range`). No redirect and no `X-Xet-*` header, so the client downloads over
  plain HTTP even where hf_xet is installed.
- Errors carry the hub's headers, which `hf_raise_for_status` maps to exceptions:
  `X-Error-Code: RepoNotFound` -> RepositoryNotFoundError, `RevisionNotFound` ->
  RevisionNotFoundError, `EntryNotFound` (with `X-Repo-Commit`, which the client uses to
  cache the file's absence) -> RemoteEntryNotFoundError, a subclass of EntryNotFoundError.

Each repo gets a 40-hex commit sha derived from its content (stable across runs), is
served at revision `main` and at that sha, and gets a `.gitattributes` like every hub repo
(`HubRepo(..., gitattributes=False)` leaves it out). Files ending in .safetensors, .gguf,
.bin, ... or of 10 MiB and more are LFS files: their ETag is their sha256, as on the hub.
`sparse(n)` files are n zero bytes (after an optional real `head`), streamed in 1 MiB
chunks and never built in memory, so a repo may declare a 400 GB file; their sha256 is
real up to 64 MiB and a stand-in derived from the size above that (nobody hashes them).

    from tests.support.hub_server import HubServer, HubRepo, safetensors_bytes, sparse

    with HubServer([HubRepo("org/name", {"config.json": b"{}", "big.gguf": sparse(5_000_000_000)})]) as hub:
        env = hub.client_env(tmp_path / "hf")   # the variables below, for a subprocess
        hub.requests                            # [(method, path), ...] seen, path unquoted
        hub.log                                 # the same, as HubRequest(method, path, query, headers)
        hub.add(HubRepo(...)); hub.remove("org/name"); hub.repo("org/name").sha

`safetensors_bytes({name: (dtype, shape)}, metadata)` is a real, small safetensors file;
`safetensors_sparse(...)` is the same file as a `Sparse` (real header, zero data never built),
for shards of realistic size whose header get_safetensors_metadata reads with a Range.

Pointing the client at it. huggingface_hub reads its settings ONCE, when it is first
imported (constants.py is module-level: ENDPOINT, HUGGINGFACE_CO_URL_TEMPLATE, HF_HUB_CACHE,
HF_HUB_OFFLINE; `huggingface_hub.hf_api.api`, behind the module-level functions, keeps the
endpoint it was built with). tests/conftest.py also sets HF_HUB_OFFLINE=1 for the whole
pytest process before any test module loads. So a test does not call the client in the
pytest process: it runs it in a subprocess (the CLI through tests.support.clirun.run_cli,
or `sys.executable -c ...`) whose environment holds `hub.client_env(home)`:

    HF_ENDPOINT=http://127.0.0.1:PORT   every URL the client builds starts with it
    HF_HUB_OFFLINE=0                    conftest's HF_HUB_OFFLINE=1 would refuse all traffic
    HF_HOME=home, HF_HUB_CACHE=home/hub the cache (and token file) in tmp_path, not ~/.cache
    HF_HUB_DISABLE_TELEMETRY=1, HF_HUB_DISABLE_IMPLICIT_TOKEN=1   nothing sent but the calls
    NO_PROXY=127.0.0.1,localhost        the client's HTTP library honours proxy variables

The `hub_server` fixture does exactly that: it starts an empty server, sets these
variables with monkeypatch (so run_cli's `{**os.environ, ...}` passes them on) and yields
the server; the test adds its repos with `hub_server.add(...)`.
Use it with `from tests.support.hub_server import hub_server  # noqa: F401`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Type, Union
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

CHUNK = 1 << 20
# Above this a sparse file's hashes are stand-ins: hashing gigabytes of zeros would take seconds.
REAL_HASH_LIMIT = 64 << 20
# What the hub stores in LFS: the usual .gitattributes patterns, and anything of 10 MiB or more.
LFS_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".npz", ".zip")
LFS_MIN_SIZE = 10 << 20
GITATTRIBUTES = b"".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n".encode() for suffix in LFS_SUFFIXES)
TIMESTAMP = "2025-01-01T00:00:00.000Z"
WHOLE = (-1, -1)  # a Range header to ignore: answer 200 with the whole file
DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}


@dataclass(frozen=True)
class Sparse:
    """A file known by its size: `head` (real bytes), then zeros up to `size`."""

    size: int
    head: bytes = b""

    def __post_init__(self) -> None:
        if self.size < len(self.head):
            raise ValueError(f"sparse file of {self.size} bytes cannot hold a head of {len(self.head)}")


Content = Union[bytes, Sparse]


def sparse(size: int, head: bytes = b"") -> Sparse:
    """A file of `size` bytes served as `head` then zeros, never held in memory."""
    return Sparse(int(size), bytes(head))


def _safetensors_layout(
    tensors: Mapping[str, Tuple[str, Sequence[int]]], metadata: Optional[Mapping[str, str]]
) -> Tuple[bytes, int]:
    """The 8-byte length, the JSON header (padded to 8 bytes) and the data size."""
    header: Dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        if dtype not in DTYPE_BYTES:
            raise ValueError(f"unknown safetensors dtype {dtype!r} for {name}")
        nbytes = DTYPE_BYTES[dtype] * math.prod(shape)
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the safetensors writers align the data on 8 bytes
    return len(text).to_bytes(8, "little") + text, offset


def safetensors_bytes(
    tensors: Mapping[str, Tuple[str, Sequence[int]]], metadata: Optional[Mapping[str, str]] = None
) -> bytes:
    """A real safetensors file: `{name: (dtype, shape)}`, every tensor zeros. Keep shapes small."""
    head, data = _safetensors_layout(tensors, metadata)
    return head + bytes(data)


def safetensors_sparse(
    tensors: Mapping[str, Tuple[str, Sequence[int]]], metadata: Optional[Mapping[str, str]] = None
) -> Sparse:
    """The same file as a `Sparse`: real header, zero data streamed, so shapes may be huge."""
    head, data = _safetensors_layout(tensors, metadata)
    return Sparse(len(head) + data, head)


def _safetensors_header(content: Content) -> Optional[Dict[str, Any]]:
    raw = content.head if isinstance(content, Sparse) else content
    if len(raw) < 8:
        return None
    length = int.from_bytes(raw[:8], "little")
    if len(raw) < 8 + length:
        return None
    try:
        header = json.loads(raw[8 : 8 + length])
    except ValueError:
        return None
    return header if isinstance(header, dict) else None


def _chunks(content: Content, start: int, end: int) -> Iterator[bytes]:
    """Bytes start..end (inclusive) of the file, at most CHUNK at a time."""
    if isinstance(content, bytes):
        for at in range(start, end + 1, CHUNK):
            yield content[at : min(at + CHUNK, end + 1)]
        return
    head = content.head
    at = start
    while at <= end:
        if at < len(head):
            piece = head[at : min(len(head), end + 1, at + CHUNK)]
        else:
            piece = bytes(min(CHUNK, end + 1 - at))
        yield piece
        at += len(piece)


def _hash(content: Content, algorithm: str, prefix: bytes = b"") -> str:
    digest = hashlib.new(algorithm, prefix)
    size = len(content) if isinstance(content, bytes) else content.size
    if size > REAL_HASH_LIMIT:
        assert isinstance(content, Sparse)
        digest.update(b"stand-in for zeros after " + hashlib.sha256(content.head).digest() + str(size).encode())
        return digest.hexdigest()
    for chunk in _chunks(content, 0, size - 1):
        digest.update(chunk)
    return digest.hexdigest()


@dataclass
class HubFile:
    """One file of a repo, with the identifiers the hub gives it."""

    path: str
    content: Content
    size: int = field(init=False)
    lfs: bool = field(init=False)
    sha256: Optional[str] = field(init=False)  # LFS only
    oid: str = field(init=False)  # git blob id: of the file, or of its LFS pointer
    pointer_size: int = field(init=False)

    def __post_init__(self) -> None:
        self.size = len(self.content) if isinstance(self.content, bytes) else self.content.size
        self.lfs = self.path.endswith(LFS_SUFFIXES) or self.size >= LFS_MIN_SIZE
        if self.lfs:
            self.sha256 = _hash(self.content, "sha256")
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {self.size}\n"
            self.pointer_size = len(pointer)
            self.oid = hashlib.sha1(f"blob {len(pointer)}\0{pointer}".encode()).hexdigest()
        else:
            self.sha256 = None
            self.pointer_size = 0
            self.oid = _hash(self.content, "sha1", f"blob {self.size}\0".encode())

    @property
    def etag(self) -> str:
        return self.sha256 if self.sha256 is not None else self.oid

    def sibling(self, blobs: bool) -> Dict[str, Any]:
        entry: Dict[str, Any] = {"rfilename": self.path}
        if blobs:
            entry["size"] = self.size
            entry["blobId"] = self.oid
            if self.lfs:
                entry["lfs"] = {"sha256": self.sha256, "size": self.size, "pointerSize": self.pointer_size}
        return entry

    def tree_entry(self, sha: str, expand: bool) -> Dict[str, Any]:
        entry: Dict[str, Any] = {"type": "file", "oid": self.oid, "size": self.size, "path": self.path}
        if self.lfs:
            entry["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": self.pointer_size}
        if expand:
            entry["lastCommit"] = {"id": sha, "title": "Upload", "date": TIMESTAMP}
            entry["securityFileStatus"] = {"status": "safe", "avScan": None, "pickleImportScan": None}
        return entry


class HubRepo:
    """A model repo: `repo_id` ("org/name") and its files, `{path: bytes or sparse(n)}`."""

    def __init__(self, repo_id: str, files: Mapping[str, Content], *, gitattributes: bool = True) -> None:
        if repo_id.count("/") != 1 or not all(repo_id.split("/")):
            raise ValueError(f"repo id must be org/name, got {repo_id!r}")
        self.repo_id = repo_id
        contents: Dict[str, Content] = {}
        if gitattributes:
            contents[".gitattributes"] = GITATTRIBUTES
        for path, content in files.items():
            if isinstance(content, bytearray):
                content = bytes(content)
            if not isinstance(content, (bytes, Sparse)):
                raise TypeError(f"{path}: give bytes or sparse(size), not {type(content).__name__}")
            if not path or path.startswith("/") or ".." in path.split("/"):
                raise ValueError(f"bad path in repo: {path!r}")
            contents[path] = content
        self.files: Dict[str, HubFile] = {p: HubFile(p, c) for p, c in sorted(contents.items())}
        listing = "\n".join(f"{f.path} {f.oid}" for f in self.files.values())
        self.sha = hashlib.sha1(f"{repo_id}\n{listing}".encode()).hexdigest()

    def __repr__(self) -> str:
        return f"HubRepo({self.repo_id!r}, {len(self.files)} files, sha={self.sha[:8]})"

    def info(self, blobs: bool) -> Dict[str, Any]:
        """What GET /api/models/{id} answers (the fields ModelInfo reads)."""
        org = self.repo_id.split("/")[0]
        data: Dict[str, Any] = {
            "_id": self.sha[:24],
            "id": self.repo_id,
            "modelId": self.repo_id,
            "author": org,
            "sha": self.sha,
            "lastModified": TIMESTAMP,
            "createdAt": TIMESTAMP,
            "private": False,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "spaces": [],
            "siblings": [f.sibling(blobs) for f in self.files.values()],
            "usedStorage": sum(f.size for f in self.files.values()),
        }
        config = self.files.get("config.json")
        if config is not None and isinstance(config.content, bytes):
            try:
                parsed = json.loads(config.content)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):  # the hub shows a few keys of config.json
                data["config"] = {k: parsed[k] for k in ("architectures", "model_type") if k in parsed}
        parameters: Dict[str, int] = {}
        for file in self.files.values():
            if file.path.endswith(".safetensors"):
                header = _safetensors_header(file.content)
                if header is None:
                    parameters = {}
                    break
                for name, tensor in header.items():
                    if name != "__metadata__":
                        parameters[tensor["dtype"]] = parameters.get(tensor["dtype"], 0) + math.prod(tensor["shape"])
        if parameters:
            data["safetensors"] = {"parameters": parameters, "total": sum(parameters.values())}
        return data

    def tree(self, path: str, recursive: bool, expand: bool) -> Optional[List[Dict[str, Any]]]:
        """What GET /api/models/{id}/tree/{rev}/{path} answers; None when `path` is no folder."""
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        folders: Dict[str, None] = {}
        files: List[HubFile] = []
        for file in self.files.values():
            if not file.path.startswith(prefix):
                continue
            parts = file.path[len(prefix) :].split("/")
            for depth in range(1, len(parts) if recursive else min(2, len(parts))):
                folders[prefix + "/".join(parts[:depth])] = None
            if recursive or len(parts) == 1:
                files.append(file)
        if prefix and not files and not folders:
            return None
        entries = [
            {
                "type": "directory",
                "oid": hashlib.sha1(f"tree {self.sha} {d}".encode()).hexdigest(),
                "size": 0,
                "path": d,
            }
            for d in folders
        ]
        entries += [f.tree_entry(self.sha, expand) for f in files]
        return sorted(entries, key=lambda e: e["path"])


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a client's idle keep-alive connection must not hold up stop()
    hub: HubServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the hub; every answer has a Content-Length
    timeout = 30  # no test client idles this long: a stuck connection is let go
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # the record is `hub.requests`; stderr stays the tests'

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_POST(self) -> None:
        length = min(int(self.headers.get("Content-Length") or 0), 1 << 20)
        self.rfile.read(length)
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        hub = self.server.hub
        split = urlsplit(self.path)
        segments = [unquote(s) for s in split.path.split("/")[1:]]
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        hub._record(self.command, "/" + "/".join(segments), query, dict(self.headers.items()))
        try:
            if self.command in ("GET", "HEAD") and segments[:2] == ["api", "models"] and len(segments) >= 4:
                self._api(hub, segments[2:], query, body)
            elif self.command in ("GET", "HEAD") and len(segments) >= 5 and segments[2] == "resolve":
                self._resolve(hub, segments, body)
            else:
                self._error(404, None, f"no route for {self.command} {split.path}", body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away (a ranged read it cut short)

    def _repo(self, hub: HubServer, repo_id: str, rev: str, body: bool) -> Optional[HubRepo]:
        repo = hub._repo(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found", body)
        elif rev not in ("main", repo.sha):
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", body)
            return None
        return repo

    def _api(self, hub: HubServer, rest: List[str], query: Dict[str, str], body: bool) -> None:
        repo_id, rest = "/".join(rest[:2]), rest[2:]
        if not rest or (rest[0] == "revision" and len(rest) >= 2):
            repo = self._repo(hub, repo_id, "/".join(rest[1:]) or "main", body)
            if repo is not None:
                self._json(repo.info(query.get("blobs", "").lower() == "true"), body)
        elif rest[0] == "tree" and len(rest) >= 2:
            repo = self._repo(hub, repo_id, rest[1], body)
            if repo is None:
                return
            path = "/".join(rest[2:])
            entries = repo.tree(path, query.get("recursive", "").lower() == "true", query.get("expand") == "true")
            if entries is None:
                self._error(404, "EntryNotFound", f"{path} does not exist on 'main'", body, commit=repo.sha)
            else:
                self._json(entries, body)
        else:
            self._error(404, None, f"no route for /api/models/{repo_id}/{'/'.join(rest)}", body)

    def _resolve(self, hub: HubServer, segments: List[str], body: bool) -> None:
        repo = self._repo(hub, "/".join(segments[:2]), segments[3], body)
        if repo is None:
            return
        file = repo.files.get("/".join(segments[4:]))
        if file is None:
            self._error(404, "EntryNotFound", "Entry not found", body, commit=repo.sha)
            return
        start, end, status = 0, file.size - 1, 200
        wanted = self.headers.get("Range")
        if wanted and self.command == "GET":
            bounds = _parse_range(wanted, file.size)
            if bounds is None:
                unsatisfiable = {"Content-Range": f"bytes */{file.size}"}
                self._error(416, None, f"range {wanted} not satisfiable", body, extra=unsatisfiable)
                return
            if bounds is not WHOLE:
                start, end, status = bounds[0], bounds[1], 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("X-Repo-Commit", repo.sha)
        self.send_header("ETag", f'"{file.etag}"')
        if file.lfs:  # what the hub sends beside the redirect of an LFS file
            self.send_header("X-Linked-Etag", f'"{file.etag}"')
            self.send_header("X-Linked-Size", str(file.size))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{file.size}")
        self.end_headers()
        if body and end >= start:
            for chunk in _chunks(file.content, start, end):
                self.wfile.write(chunk)

    def _json(self, data: Any, body: bool) -> None:
        payload = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def _error(
        self,
        status: int,
        code: Optional[str],
        message: str,
        body: bool,
        commit: Optional[str] = None,
        extra: Optional[Dict[str, str]] = None,
    ) -> None:
        payload = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        if code is not None:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        if commit is not None:
            self.send_header("X-Repo-Commit", commit)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(payload)


def _parse_range(header: str, size: int) -> Optional[Tuple[int, int]]:
    """One `bytes=a-b`, `bytes=a-` or `bytes=-n` range, clipped; None when unsatisfiable.

    WHOLE (answer 200 with the whole file, as RFC 9110 allows) for several ranges or a
    header that cannot be read: the client never sends those.
    """
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return WHOLE
    first, _, last = spec.strip().partition("-")
    try:
        if first == "":
            count = int(last)
            if count <= 0 or size == 0:
                return None
            return (max(0, size - count), size - 1)
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return WHOLE
    if start >= size or end < start:
        return None
    return (start, min(end, size - 1))


@dataclass(frozen=True)
class HubRequest:
    """One request as the server saw it (path unquoted, query flattened)."""

    method: str
    path: str
    query: Dict[str, str]
    headers: Dict[str, str]


class HubServer:
    """Context manager: `with HubServer([HubRepo(...)]) as hub: hub.url ...` (127.0.0.1, free port)."""

    def __init__(self, repos: Iterable[HubRepo] = ()) -> None:
        self._lock = threading.Lock()
        self._repos: Dict[str, HubRepo] = {}
        for repo in repos:
            self.add(repo)
        self.requests: List[Tuple[str, str]] = []  # (method, unquoted path), in arrival order
        self.log: List[HubRequest] = []  # the same requests with query and headers
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    # -- what it serves ------------------------------------------------------------
    def add(self, repo: HubRepo) -> HubRepo:
        """Serve `repo` (replacing one of the same id); returns it, e.g. for `repo.sha`."""
        with self._lock:
            self._repos[repo.repo_id] = repo
        return repo

    def remove(self, repo_id: str) -> None:
        """Stop serving `repo_id`: it then answers RepoNotFound. KeyError if it was not served."""
        with self._lock:
            del self._repos[repo_id]

    def repo(self, repo_id: str) -> HubRepo:
        with self._lock:
            return self._repos[repo_id]

    def _repo(self, repo_id: str) -> Optional[HubRepo]:
        with self._lock:
            return self._repos.get(repo_id)

    def _record(self, method: str, path: str, query: Dict[str, str], headers: Dict[str, str]) -> None:
        with self._lock:
            self.requests.append((method, path))
            self.log.append(HubRequest(method, path, query, headers))

    # -- running -------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the hub server is not running: use it as `with HubServer(...) as hub:`")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def client_env(self, hf_home: Union[str, Path]) -> Dict[str, str]:
        """The environment variables that point a (subprocess) huggingface_hub client here."""
        home = Path(hf_home)
        home.mkdir(parents=True, exist_ok=True)
        no_proxy = ",".join(x for x in ("127.0.0.1", "localhost", os.environ.get("NO_PROXY", "")) if x)
        return {
            "HF_ENDPOINT": self.url,
            "HF_HUB_OFFLINE": "0",
            "HF_HOME": str(home),
            "HF_HUB_CACHE": str(home / "hub"),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
            "NO_PROXY": no_proxy,
            "no_proxy": no_proxy,
        }

    def start(self) -> HubServer:
        if self._server is not None:
            return self
        server = _Server(("127.0.0.1", 0), _Handler)
        server.hub = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="hub-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(
        self, kind: Optional[Type[BaseException]], error: Optional[BaseException], trace: Optional[TracebackType]
    ) -> None:
        self.stop()


@pytest.fixture
def hub_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[HubServer]:
    """An empty running HubServer, with the environment pointing subprocess clients at it.

    HF_HOME is `tmp_path / "hf-home"`; add repos with `hub_server.add(HubRepo(...))`.
    """
    with HubServer() as hub:
        for name, value in hub.client_env(tmp_path / "hf-home").items():
            monkeypatch.setenv(name, value)
        yield hub
