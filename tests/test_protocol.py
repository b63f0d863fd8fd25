"""Wire protocol: framing, signatures over buffers, replay and age checks, validation helpers."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.protocol import (DELIM, PROTOCOL_VERSION, FieldError, ProtocolError, ReplayCache, Session, check_glb,
                             curve_hmac_key, require_int, require_job_id, version_compatible)

KEY = b"0123456789abcdef0123456789abcdef"


def roundtrip(frames, session=None):
    return (session or Session(KEY)).deserialize(frames)


def test_roundtrip_with_buffers_and_identities():
    s = Session(KEY, client_id="alice")
    frames = s.serialize("submit_request", {"settings": {"prompt": "ü chair"}}, [b"\x00" * 10, b"glb"],
                         job_id="a" * 32, identities=[b"id1"])
    assert frames[0] == b"id1" and frames[1] == DELIM
    m = roundtrip(frames)
    assert m.identities == [b"id1"]
    assert m.msg_type == "submit_request" and m.content == {"settings": {"prompt": "ü chair"}}
    assert m.buffers == [b"\x00" * 10, b"glb"]
    assert m.header["version"] == PROTOCOL_VERSION and m.header["client_id"] == "alice"
    assert m.header["job_id"] == "a" * 32 and len(m.msg_id) == 32


@pytest.mark.parametrize("part", [1, 2, 3, 4])   # signature, header, content, a buffer
def test_tampering_with_any_part_breaks_the_signature(part):
    frames = Session(KEY).serialize("x", {"a": 1}, [b"buffer"])
    frames[part] = frames[part][:-1] + bytes([frames[part][-1] ^ 1])
    with pytest.raises(ProtocolError) as e:
        roundtrip(frames)
    assert e.value.reason in ("bad_signature",)


def test_bytes_cannot_move_across_buffer_boundaries():
    frames = Session(KEY).serialize("x", {}, [b"abc", b"def"])
    moved = frames[:4] + [b"ab", b"cdef"]
    with pytest.raises(ProtocolError, match="bad_signature"):
        roundtrip(moved)
    dropped = frames[:4] + [b"abcdef"]
    with pytest.raises(ProtocolError, match="bad_signature"):
        roundtrip(dropped)


def test_unsigned_wrong_key_missing_delimiter_and_replay():
    s = Session(KEY)
    frames = s.serialize("x", {})
    with pytest.raises(ProtocolError, match="unsigned"):
        roundtrip([DELIM, b"", *frames[2:]])
    with pytest.raises(ProtocolError, match="bad_signature"):
        roundtrip(Session(b"another key").serialize("x", {}))
    with pytest.raises(ProtocolError, match="no_delimiter"):
        roundtrip(frames[1:])
    receiver = Session(KEY)
    receiver.deserialize(frames)
    with pytest.raises(ProtocolError, match="replay"):
        receiver.deserialize(frames)


def test_old_and_future_messages_are_rejected():
    s = Session(KEY)
    for offset in (-3600, +3600):
        header = s.make_header("x")
        header["date"] = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + offset))
        with pytest.raises(ProtocolError, match="stale"):
            roundtrip(s.serialize("x", {}, header=header))
    # over CURVE (no age check) the same message is fine
    header["date"] = "2001-01-01T00:00:00+00:00"
    assert roundtrip(s.serialize("x", {}, header=header), Session(KEY, max_age_s=None)).msg_type == "x"


def test_signed_garbage_is_a_protocol_error_not_a_crash():
    s = Session(KEY)
    for h, c in [(b"not json", b"{}"), (b"[]", b"{}"), (b"{}", b"{}"), (b'{"msg_id":"a","msg_type":"x"}', b"[1]"),
                 (b"[" * 100000 + b"]" * 100000, b"{}"), (b"\xff\xfe", b"{}"),
                 (json.dumps({"msg_id": "a", "msg_type": "x", "date": "x"}).encode(), b'{"a": NaN}')]:
        with pytest.raises(ProtocolError):
            roundtrip([DELIM, s.sign([h, c]), h, c])


def test_size_limits():
    s = Session(KEY, max_content_bytes=100, max_buffers=2, max_buffer_bytes=10)
    with pytest.raises(ProtocolError, match="too_large"):
        s.deserialize(Session(KEY).serialize("x", {"a": "y" * 200}))
    with pytest.raises(ProtocolError, match="too_many_frames"):
        s.deserialize(Session(KEY).serialize("x", {}, [b"1", b"2", b"3"]))
    with pytest.raises(ProtocolError, match="too_large"):
        s.deserialize(Session(KEY).serialize("x", {}, [b"x" * 11]))


def test_replay_cache_is_bounded():
    c = ReplayCache(4)
    for i in range(10):
        c.add(bytes([i]))
    assert len(c) == 4 and c.seen(bytes([9])) and not c.seen(bytes([0]))


def test_key_required_and_versions():
    with pytest.raises(ValueError):
        Session(b"")
    assert version_compatible(PROTOCOL_VERSION)
    assert version_compatible(PROTOCOL_VERSION.split(".")[0] + ".99")
    assert not version_compatible("999.0") and not version_compatible(None) and not version_compatible(1)
    assert curve_hmac_key("x" * 40) == curve_hmac_key(b"x" * 40) != curve_hmac_key("y" * 40)


def test_field_helpers_name_the_field():
    with pytest.raises(FieldError) as e:
        require_job_id({"job_id": "../../etc/passwd"})
    assert e.value.field == "job_id"
    with pytest.raises(FieldError) as e:
        require_int({"after_seq": True}, "after_seq", 0, 10)
    assert e.value.field == "after_seq"
    assert require_int({}, "limit", 1, 5, default=3) == 3


def test_check_glb():
    good = b"glTF" + struct.pack("<II", 2, 20) + b"\x00" * 8
    check_glb(good, "init_mesh", 100)
    for bad in (b"", b"PK\x03\x04" + good[4:], b"glTF" + struct.pack("<II", 1, 20) + b"\x00" * 8,
                b"glTF" + struct.pack("<II", 2, 99) + b"\x00" * 8):
        with pytest.raises(FieldError) as e:
            check_glb(bad, "init_mesh", 100)
        assert e.value.field == "init_mesh"
    with pytest.raises(FieldError, match="limit"):
        check_glb(good, "init_mesh", 10)


frame = st.binary(max_size=64) | st.sampled_from([DELIM, b"{}", b"[]", b'{"msg_id":"a"}', b"0" * 64])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frame, max_size=12))
def test_arbitrary_frames_only_raise_protocol_error(frames):
    try:
        Session(KEY).deserialize(frames)
    except ProtocolError:
        pass


json_value = st.recursive(st.none() | st.booleans() | st.integers(-2 ** 53, 2 ** 53) | st.text(max_size=20)
                          | st.floats(allow_nan=False, allow_infinity=False),
                          lambda ch: st.lists(ch, max_size=4) | st.dictionaries(st.text(max_size=8), ch, max_size=4),
                          max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=10), json_value, max_size=6), st.lists(st.binary(max_size=100), max_size=3))
def test_any_json_content_and_buffers_roundtrip(content, buffers):
    m = roundtrip(Session(KEY).serialize("some_type", content, buffers))
    assert m.content == content and m.buffers == buffers


def test_shared_imports_neither_torch_nor_numpy():
    code = ("import sys, shared.protocol, shared.client, shared.paths, shared.settings; "
            "bad = [m for m in ('torch', 'numpy') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_paths_fallback_without_platformdirs(monkeypatch):
    import shared.paths as paths

    monkeypatch.delenv("DREAMPROP_DATA_DIR", raising=False)
    with_pd = paths.user_data_dir()
    monkeypatch.setitem(sys.modules, "platformdirs", None)   # import fails, as in Blender
    assert paths.user_data_dir() == with_pd
    monkeypatch.setenv("DREAMPROP_CONNECTION_FILE", "/tmp/x/conn.json")
    assert paths.default_connection_file() == "/tmp/x/conn.json"


@given(st.integers(1, 100000), st.integers(0, 100000))
def test_live_proxy_lands_by_a_fifth_of_the_run(steps, preview_interval):
    from shared.settings import live_proxy_interval

    interval = live_proxy_interval(steps, preview_interval)
    assert interval >= 1
    assert interval <= max(1, steps / 5)                       # the first proxy by 20% of the steps
    if preview_interval:
        assert interval <= 5 * preview_interval               # and at least every 5th preview
