"""dreamprop wire protocol: signed multipart ZeroMQ messages (in the spirit of Jupyter's kernel protocol).

Pure Python + stdlib (pyzmq is only needed by the client and the server, not by this module), so the
Blender add-on can import it. Never import torch or numpy here.

Frames of one message (ROUTER side shows the routing identities; a DEALER sends none)::

    [identity ...] b"<IDS|MSG>" signature header content [buffer ...]

- ``header``  JSON object: ``msg_id`` (32 hex), ``msg_type``, ``version`` (protocol version),
  ``date`` (ISO 8601, UTC), optional ``job_id``, ``reply_to`` (the msg_id of the request a reply
  answers) and ``client_id`` (local mode: the owner name a client chose).
- ``content`` JSON object, the body of the request, reply or event.
- ``buffers`` raw bytes: PNG previews, GLB meshes.
- ``signature`` = hex HMAC-SHA256, keyed with the shared secret, over header, content **and** every
  buffer, each part prefixed with its length as 8 bytes big-endian. (Jupyter does not sign buffers,
  and plain concatenation lets bytes move across a frame boundary without changing the digest; the
  length prefixes make the signed encoding injective.)

Receivers reject (and count) frames without a delimiter, unsigned or wrongly signed messages
(``hmac.compare_digest``), replays (a bounded cache of the last ``2**16`` digests, plus an optional
maximum message age so that an old message cannot be replayed once it left the cache), oversized
parts and malformed JSON. A protocol version whose major number differs is answered with an
``error`` reply that says so.

Message types
-------------
Requests (client -> server) and their replies (``<name>_reply``; on failure the reply content is
``{"status": "error", "error": code, "field": name-or-null, "message": text}``):

- ``info_request``   {} -> versions, device, GPUs, models, queue length, workers, your owner id,
  ``devices`` (each GPU's name, total and free memory; else the CPU's) and ``cost`` (the device jobs
  are estimated for, its usable memory, the cost profile, whether it is calibrated for this device
  and its error on held-out settings)
- ``estimate_request`` {"settings": {...}} -> the estimated time and peak memory of a job with these
  settings on the server's device: {"time_s", "peak_memory_bytes", "memory_usable_bytes", "fits",
  "problem": null | {"field", "message"}, "parts_s", "stages", "profile", "calibrated", "notes",
  "held_out_error", "device"}. Settings are resolved as a submit resolves them (the prompt may be
  empty). Error ``no_profile`` when no cost profile can answer for the device or model.
- ``submit_request`` {"settings": {...}, "parent_job_id"?: id, "client_token"?: str, "attach"?: bool,
  "buffers"?: ["init_mesh" | "image", ...]} + optional buffers, named in order by ``buffers`` (default:
  one buffer = the initial mesh): ``init_mesh`` a GLB to refine, ``image`` the reference picture of
  an image-to-3D job (``guidance_type`` zero123; PNG/JPEG/WebP/BMP/TIFF, at most ``MAX_IMAGE_BYTES``,
  each side in [32, 4096], an object on a plain backdrop or with an alpha channel) -> {"job_id",
  "position", "duplicate", "warnings"?: [text]}. Settings whose estimated peak memory exceeds the device's are
  refused (error ``does_not_fit``, ``field`` the setting to change, the message its largest value that fits).
  Settings left out come from ``shared.layering`` (the model's recommended
  settings, then the schema defaults). ``warnings`` (only when there are some), e.g. a prompt outside
  the built-in prior's vocabulary: the job still runs; a client shows them to the user.
- ``cancel_request`` {"job_id"} -> {"job_id", "state", "cancelled": bool}
- ``status_request`` {"job_id"} -> {"job": {...}}
- ``list_request``   {"limit"?: int, "states"?: [...]} -> {"jobs": [...]}  (only the caller's jobs)
- ``attach_request`` {"job_id", "after_seq"?: int} -> {"job_id", "state", "last_seq"}, then the
  missed events (seq > after_seq; only the latest progress/proxy mesh of the missed ones) and every
  later event of that job
- ``detach_request`` {"job_id"} -> {}
- ``result_request`` {"job_id"} -> {"job_id", "metadata"} + buffers [GLB, turntable PNG]

Events (server -> attached clients; content always has ``job_id``, ``seq`` (per job, monotonically
increasing, persisted) and ``time``):

- ``accepted``   {"position"}                           queued (position 0 = next to run)
- ``started``    {"worker", "device", "run", "resumed"}  a worker took it (resumed: from a checkpoint)
- ``progress``   {"step", "total", "losses", "elapsed_s", "eta_s", "stage", "message", "preview"}
                 + buffer [PNG] when ``preview`` is true
- ``proxy_mesh`` {"step"} + buffer [GLB]                 coarse marching-cubes mesh, vertex colours
- ``requeued``   {"reason", "crashes"}                   its worker died; it will resume from its checkpoint
- ``finished``   {"metadata"} + buffers [GLB, turntable PNG]
- ``failed``     {"error"}
- ``cancelled``  {}

``progress`` and ``proxy_mesh`` are droppable: a lagging client only gets the latest one of a job.
Terminal events (finished, failed, cancelled) are persisted and re-sent on attach.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import struct
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

try:  # the package's single protocol version lives in shared/__init__.py (relative: the add-on
    from . import PROTOCOL_VERSION  # vendors shared/ under its own package name)
except ImportError:  # pragma: no cover - imported as a loose module
    PROTOCOL_VERSION = "1.0"

DELIM = b"<IDS|MSG>"
SIGNATURE_SCHEME = "hmac-sha256"

# ---- message types ---------------------------------------------------------------------------
REQUEST_TYPES = (
    "info_request", "submit_request", "cancel_request", "status_request", "list_request",
    "attach_request", "detach_request", "result_request", "estimate_request",
)
ERROR_TYPE = "error"
EVENT_TYPES = ("accepted", "started", "progress", "proxy_mesh", "requeued", "finished", "failed",
               "cancelled")
TERMINAL_EVENTS = ("finished", "failed", "cancelled")
DROPPABLE_EVENTS = ("progress", "proxy_mesh")
JOB_STATES = ("queued", "running", "finished", "failed", "cancelled")
TERMINAL_STATES = ("finished", "failed", "cancelled")


def reply_type(request_type: str) -> str:
    return request_type[: -len("_request")] + "_reply" if request_type.endswith("_request") else ERROR_TYPE


# ---- limits ----------------------------------------------------------------------------------
MAX_HEADER_BYTES = 4096
MAX_ID_CHARS = 64
MAX_CLIENT_ID_CHARS = 128
DEFAULT_MAX_CONTENT_BYTES = 256 * 1024          # requests: settings + a 500-char prompt fit easily
DEFAULT_MAX_BUFFERS = 4
DEFAULT_MAX_BUFFER_BYTES = 64 * 1024 * 1024     # an initial mesh; the server also sets MAXMSGSIZE
REPLAY_CACHE_SIZE = 2 ** 16
DEFAULT_MAX_AGE_S = 600.0                       # messages older than this are rejected (replays)
CLOCK_SKEW_S = 60.0                             # messages this far in the future are rejected

JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_MSG_ID_RE = re.compile(r"^[0-9A-Za-z_.:-]{1,64}$")


class ProtocolError(Exception):
    """A received message was rejected. ``reason`` is a short code used for the drop counters."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class FieldError(ValueError):
    """A request field is invalid; the server answers ``{"error": code, "field": field, "message"}``."""

    def __init__(self, field: str | None, message: str, code: str = "invalid"):
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message
        self.code = code


@dataclass
class Message:
    msg_type: str
    header: dict
    content: dict
    buffers: list[bytes] = field(default_factory=list)
    identities: list[bytes] = field(default_factory=list)   # routing frames (ROUTER side only)

    @property
    def msg_id(self) -> str:
        return self.header.get("msg_id", "")

    @property
    def reply_to(self) -> str | None:
        return self.header.get("reply_to")

    @property
    def job_id(self) -> str | None:
        return self.content.get("job_id") or self.header.get("job_id")

    @property
    def seq(self) -> int:
        return int(self.content.get("seq", 0) or 0)

    @property
    def is_error(self) -> bool:
        return self.msg_type == ERROR_TYPE or self.content.get("status") == "error"

    def __repr__(self) -> str:  # buffers can be megabytes: show their sizes only
        sizes = [len(b) for b in self.buffers]
        return f"Message({self.msg_type!r}, content={self.content!r}, buffers={sizes})"


# ---- JSON ------------------------------------------------------------------------------------
def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def json_dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def json_loads(data: bytes) -> Any:
    return json.loads(data.decode("utf-8"), parse_constant=_reject_constant)


def utcnow_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def parse_date(text: str) -> float:
    """ISO 8601 -> epoch seconds (raises ValueError)."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def new_id() -> str:
    return uuid.uuid4().hex


def version_compatible(version: Any) -> bool:
    """Same major protocol version (minor versions only add optional fields)."""
    if not isinstance(version, str):
        return False
    return version.split(".", 1)[0] == PROTOCOL_VERSION.split(".", 1)[0]


# ---- replay cache ----------------------------------------------------------------------------
class ReplayCache:
    """Bounded set of recently seen signatures (oldest evicted first)."""

    def __init__(self, size: int = REPLAY_CACHE_SIZE):
        self.size = size
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def seen(self, digest: bytes) -> bool:
        return digest in self._seen

    def add(self, digest: bytes) -> None:
        self._seen[digest] = None
        while len(self._seen) > self.size:
            self._seen.popitem(last=False)

    def __len__(self) -> int:
        return len(self._seen)


# ---- session ---------------------------------------------------------------------------------
class Session:
    """Builds and checks signed frames with one shared key.

    ``max_age_s``: reject messages whose header date is older (None: no age check, e.g. over CURVE
    between machines whose clocks may differ; CurveZMQ already rejects replayed packets).
    """

    def __init__(self, key: bytes | str, *, client_id: str | None = None,
                 max_age_s: float | None = DEFAULT_MAX_AGE_S,
                 max_content_bytes: int = DEFAULT_MAX_CONTENT_BYTES,
                 max_buffers: int = DEFAULT_MAX_BUFFERS,
                 max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES,
                 replay_cache_size: int = REPLAY_CACHE_SIZE):
        if isinstance(key, str):
            key = key.encode("ascii")
        if not key:
            raise ValueError("an HMAC key is required (unsigned messages are never accepted)")
        self.key = bytes(key)
        self.client_id = client_id
        self.max_age_s = max_age_s
        self.max_content_bytes = max_content_bytes
        self.max_buffers = max_buffers
        self.max_buffer_bytes = max_buffer_bytes
        self.replay = ReplayCache(replay_cache_size)

    # -- signing ---------------------------------------------------------------------------
    def sign(self, parts: Sequence[bytes]) -> bytes:
        h = hmac.new(self.key, digestmod=hashlib.sha256)
        for part in parts:
            part = bytes(part)
            h.update(struct.pack(">Q", len(part)))
            h.update(part)
        return h.hexdigest().encode("ascii")

    # -- building --------------------------------------------------------------------------
    def make_header(self, msg_type: str, *, job_id: str | None = None, reply_to: str | None = None,
                    msg_id: str | None = None) -> dict:
        header = {"msg_id": msg_id or new_id(), "msg_type": msg_type, "version": PROTOCOL_VERSION,
                  "date": utcnow_iso()}
        if job_id:
            header["job_id"] = job_id
        if reply_to:
            header["reply_to"] = reply_to
        if self.client_id:
            header["client_id"] = self.client_id
        return header

    def serialize(self, msg_type: str, content: dict | None = None, buffers: Iterable[bytes] = (), *,
                  job_id: str | None = None, reply_to: str | None = None, header: dict | None = None,
                  identities: Sequence[bytes] = ()) -> list[bytes]:
        """Frames ready for ``send_multipart`` (identities first when given)."""
        if header is None:
            header = self.make_header(msg_type, job_id=job_id, reply_to=reply_to)
        h = json_dumps(header)
        c = json_dumps(content if content is not None else {})
        bufs = [bytes(b) for b in buffers]
        sig = self.sign([h, c, *bufs])
        return [*identities, DELIM, sig, h, c, *bufs]

    # -- parsing ---------------------------------------------------------------------------
    @staticmethod
    def split_identities(frames: Sequence[bytes]) -> tuple[list[bytes], list[bytes]]:
        for i, f in enumerate(frames):
            if f == DELIM:
                return list(frames[:i]), list(frames[i + 1:])
        raise ProtocolError("no_delimiter")

    def deserialize(self, frames: Sequence[bytes], *, check_replay: bool = True) -> Message:
        """Check and parse frames (as received, identities included). Raises ProtocolError."""
        frames = [bytes(f) for f in frames]
        if len(frames) > 8 + self.max_buffers:
            raise ProtocolError("too_many_frames", str(len(frames)))
        identities, rest = self.split_identities(frames)
        if len(identities) > 4:
            raise ProtocolError("too_many_frames", "identities")
        if len(rest) < 3:
            raise ProtocolError("missing_frames", str(len(rest)))
        sig, h, c, *bufs = rest
        if len(bufs) > self.max_buffers:
            raise ProtocolError("too_many_frames", f"{len(bufs)} buffers")
        if len(h) > MAX_HEADER_BYTES:
            raise ProtocolError("too_large", "header")
        if len(c) > self.max_content_bytes:
            raise ProtocolError("too_large", "content")
        for b in bufs:
            if len(b) > self.max_buffer_bytes:
                raise ProtocolError("too_large", "buffer")
        if not sig:
            raise ProtocolError("unsigned")
        expected = self.sign([h, c, *bufs])
        if not hmac.compare_digest(sig, expected):
            raise ProtocolError("bad_signature")
        if check_replay and self.replay.seen(sig):
            raise ProtocolError("replay")
        try:
            header = json_loads(h)
            content = json_loads(c)
        except Exception as e:  # UnicodeError, ValueError, RecursionError...
            raise ProtocolError("bad_json", type(e).__name__) from None
        if not isinstance(header, dict) or not isinstance(content, dict):
            raise ProtocolError("bad_json", "header and content must be objects")
        msg_type = header.get("msg_type")
        msg_id = header.get("msg_id")
        if not isinstance(msg_type, str) or not 0 < len(msg_type) <= MAX_ID_CHARS:
            raise ProtocolError("bad_header", "msg_type")
        if not isinstance(msg_id, str) or not _MSG_ID_RE.match(msg_id):
            raise ProtocolError("bad_header", "msg_id")
        for key in ("job_id", "reply_to"):
            if key in header and header[key] is not None and (
                    not isinstance(header[key], str) or not _MSG_ID_RE.match(header[key])):
                raise ProtocolError("bad_header", key)
        cid = header.get("client_id")
        if cid is not None and (not isinstance(cid, str) or not 0 < len(cid) <= MAX_CLIENT_ID_CHARS):
            raise ProtocolError("bad_header", "client_id")
        if self.max_age_s is not None:
            try:
                sent = parse_date(header.get("date"))
            except Exception:
                raise ProtocolError("bad_header", "date") from None
            now = time.time()
            if not math.isfinite(sent) or sent < now - self.max_age_s or sent > now + CLOCK_SKEW_S:
                raise ProtocolError("stale", "message date outside the accepted window")
        if check_replay:
            self.replay.add(sig)
        return Message(msg_type, header, content, bufs, identities)


# ---- request field validation (shared by server and client-side pre-checks) -------------------
def require_job_id(content: dict, name: str = "job_id", *, optional: bool = False) -> str | None:
    value = content.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not JOB_ID_RE.match(value):
        raise FieldError(name, "must be a job id (32 lowercase hex characters)")
    return value


def require_int(content: dict, name: str, lo: int, hi: int, default: int | None = None) -> int:
    value = content.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise FieldError(name, f"must be an integer in [{lo}, {hi}], got {str(value)[:40]!r}")
    return value


def require_bool(content: dict, name: str, default: bool) -> bool:
    value = content.get(name, default)
    if not isinstance(value, bool):
        raise FieldError(name, f"must be true or false, got {str(value)[:40]!r}")
    return value


def require_str(content: dict, name: str, max_len: int, *, optional: bool = False) -> str | None:
    value = content.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > max_len or "\x00" in value:
        raise FieldError(name, f"must be text of at most {max_len} characters")
    return value


def check_fields(content: dict, allowed: Iterable[str]) -> None:
    allowed = set(allowed)
    for key in content:
        if key not in allowed:
            raise FieldError(str(key)[:64], "unknown field")


GLB_MAGIC = b"glTF"

# Buffers a submit may carry, by the name ``content["buffers"]`` gives each (in order).
SUBMIT_BUFFERS = ("init_mesh", "image")
MAX_IMAGE_BYTES = 16 * 1024 * 1024
# File signatures of the picture formats the server decodes (the server checks the rest: size, foreground).
IMAGE_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"BM": "BMP",
                    b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}


def submit_buffer_names(content: dict, n_buffers: int) -> list[str]:
    """The name of each buffer of a submit (``content["buffers"]``; default: one buffer = init_mesh)."""
    names = content.get("buffers")
    if names is None:
        if n_buffers > 1:
            raise FieldError("buffers", f"{n_buffers} buffers sent: name them, e.g. [\"init_mesh\", \"image\"]")
        return ["init_mesh"] * n_buffers
    if (not isinstance(names, list) or len(names) != n_buffers or len(set(map(str, names))) != len(names)
            or any(n not in SUBMIT_BUFFERS for n in names)):
        raise FieldError("buffers", f"must name each of the {n_buffers} buffers sent, once each, "
                                    f"from {', '.join(SUBMIT_BUFFERS)}")
    return names


def check_image_bytes(data: bytes, name: str = "image", max_bytes: int = MAX_IMAGE_BYTES) -> str:
    """Cheap checks a client can make before sending a picture: size and file signature. Returns the
    format; the server decodes it and checks its size and its foreground too."""
    if len(data) > max_bytes:
        raise FieldError(name, f"picture is {len(data)} bytes, the limit is {max_bytes} ({max_bytes // 2**20} MiB)")
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for magic, fmt in IMAGE_SIGNATURES.items():
        if data.startswith(magic):
            return fmt
    raise FieldError(name, "is not a picture: give a PNG, JPEG, WebP, BMP or TIFF file")


def check_glb(data: bytes, name: str, max_bytes: int) -> None:
    """A minimal structural check of a binary glTF 2.0 file (header magic, version, length)."""
    if len(data) > max_bytes:
        raise FieldError(name, f"mesh is {len(data)} bytes, the limit is {max_bytes}")
    if len(data) < 20 or data[:4] != GLB_MAGIC:
        raise FieldError(name, "must be a binary glTF (.glb) file")
    version, length = struct.unpack_from("<II", data, 4)
    if version != 2:
        raise FieldError(name, f"glTF version {version} is not supported (2 is)")
    if length != len(data):
        raise FieldError(name, f"GLB header says {length} bytes, got {len(data)}")


def error_content(code: str, message: str, field: str | None = None, **extra) -> dict:
    return {"status": "error", "error": code, "field": field, "message": message, **extra}


def curve_hmac_key(server_public_key: bytes | str) -> bytes:
    """The HMAC key used over CURVE, where CurveZMQ authenticates and encrypts every frame.

    Remote clients only hold key files, not a shared secret, so the framing key is derived from the
    server's *public* key: the signature then only guards frame integrity and feeds the replay
    cache; authentication is CurveZMQ's (the server's allow-list of client public keys).
    """
    if isinstance(server_public_key, str):
        server_public_key = server_public_key.encode("ascii")
    return hashlib.sha256(b"dreamprop-curve-hmac:" + bytes(server_public_key)).hexdigest().encode("ascii")
