"""Image-to-3D jobs on the wire and on the command line: a real server on loopback stores the picture
with the job and refuses bad pictures with the field named; the CLI checks ``--image`` the same way."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from shared.client import ServerError
from shared.layering import resolve
from shared.protocol import FieldError, Session
from tests.server_fixtures import REPO, tiny


def picture(size: int = 64, *, alpha: bool = True, empty: bool = False) -> bytes:
    """A red disc, on a transparent (alpha) or a plain grey backdrop."""
    y, x = np.mgrid[0:size, 0:size] + 0.5
    inside = ((x - size / 2) ** 2 + (y - size / 2) ** 2 < (size / 4) ** 2) & (not empty)
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[..., :3] = 128
    rgba[inside] = [220, 30, 30, 255]
    buf = io.BytesIO()
    if alpha:
        Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    else:
        Image.fromarray(rgba[..., :3], "RGB").save(buf, format="PNG")
    return buf.getvalue()


def image_job(**changes) -> dict:
    return tiny("", guidance_type="zero123", **changes)


def test_image_job_round_trip_stores_the_picture(queue_server):
    data = picture()
    with queue_server.client(client_id="image") as c:
        job = c.submit(image_job(), image=data)
        status = c.status(job)
        assert status["has_image"] is True and status["has_init_mesh"] is False
        assert status["settings"]["guidance_type"] == "zero123" and status["settings"]["prompt"] == ""
        with open(os.path.join(queue_server.state_dir, "jobs", job, "reference.img"), "rb") as f:
            assert f.read() == data
        # a text job has no picture
        text_job = c.submit(tiny())
        assert c.status(text_job)["has_image"] is False
        c.cancel(job), c.cancel(text_job)


@pytest.mark.parametrize("data, match", [
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not a readable image"),          # a PNG signature, no PNG
    (picture(4000 + 200), r"each side must be in \[32, 4096\]"),
    (picture(alpha=False, empty=True), "no foreground"),
    (picture(alpha=True, empty=True), "no foreground"),
])
def test_bad_pictures_are_refused_naming_the_image_field(queue_server, data, match):
    with queue_server.client(client_id="bad-image") as c:
        with pytest.raises(ServerError) as e:
            c.submit(image_job(), image=data)
    assert e.value.field == "image"
    assert __import__("re").search(match, e.value.message), e.value.message


def test_picture_and_guidance_type_must_agree(queue_server):
    with queue_server.client(client_id="mismatch") as c:
        with pytest.raises(ServerError) as e:
            c.submit(image_job())                                   # zero123 without a picture
        assert e.value.field == "image" and "needs a reference picture" in e.value.message
        with pytest.raises(ServerError) as e:
            c.submit(tiny(), image=picture())                        # a text job with a picture
        assert e.value.field == "image" and "does not use a picture" in e.value.message


def test_client_refuses_what_is_not_a_picture_before_sending(queue_server):
    with queue_server.client(client_id="precheck") as c:
        with pytest.raises(FieldError) as e:
            c.submit(image_job(), image=b"glTF not a picture")
    assert e.value.field == "image" and "PNG" in e.value.message


def test_unnamed_buffers_are_refused(queue_server):
    """Two buffers need names; raw frames, as another client would send them."""
    with queue_server.client(client_id="raw") as c:
        with pytest.raises(ServerError) as e:
            c.request("submit_request", {"settings": image_job()}, [b"glTF", picture()])
    assert e.value.field == "buffers"


def test_image_jobs_get_the_view_priors_settings():
    """--image alone: zero123 with model builtin gets the image preset (a CPU budget), not the text prior's."""
    image = resolve({"guidance_type": "zero123"})
    text = resolve({"prompt": "a red cube"})
    assert image.is_image_job and image.prompt == "" and image.model == "builtin"
    assert image.steps != text.steps and image.reference_resolution == 64
    assert image.distance_min == image.distance_max == text.distance_min      # the prior's camera
    assert not image.joint_text_guidance
    assert resolve({"guidance_type": "zero123", "prompt": "a red ball"}).joint_text_guidance


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": REPO}
    return subprocess.run([sys.executable, "-m", "backend", "generate", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_image_flag_checks_the_picture_and_picks_zero123(tmp_path):
    good = tmp_path / "concept.png"
    good.write_bytes(picture())
    out = run_cli("--image", str(good), "--show-settings")
    assert out.returncode == 0, out.stderr
    assert '"guidance_type": "zero123"' in out.stdout and '"reference_resolution": 64' in out.stdout
    empty = tmp_path / "empty.png"
    empty.write_bytes(picture(empty=True, alpha=False))
    out = run_cli("--image", str(empty), "--show-settings")
    assert out.returncode == 2 and "--image: shows no foreground" in out.stderr
    out = run_cli("--image", str(tmp_path / "missing.png"))
    assert out.returncode == 2 and "--image: cannot read" in out.stderr
    out = run_cli("--guidance-type", "zero123", "a red cube")
    assert out.returncode == 2 and "needs a picture" in out.stderr


def test_cli_says_when_the_picture_is_framed_at_the_priors_size(tmp_path):
    """A picture and a prompt of the built-in prior: the CLI says the picture was framed at the size the
    prior draws the object at (a mug is drawn smaller than --reference-fill's 0.8); --reference-fill 0
    keeps the picture's framing and says nothing."""
    from backend.bench.pictures import picture_png

    pic = tmp_path / "mug.png"
    pic.write_bytes(picture_png("a red mug", elevation=15.0, azimuth=30.0, size=96))
    short = ["--steps", "2", "--mesh-resolution", "32", "--texture-size", "64", "--face-budget", "500",
             "--preview-interval", "0", "--device", "cpu"]
    out = run_cli("--image", str(pic), "a red mug", "-o", str(tmp_path / "mug.glb"), *short)
    assert out.returncode == 0, out.stderr[-2000:]
    line = next((ln for ln in out.stderr.splitlines() if "the picture was framed at" in ln), "")
    fill = float(line.split("framed at ")[1].split()[0]) if line else 0.0
    assert 0.3 < fill < 0.6 and "--reference-fill 0.8" in line, out.stderr[-2000:]
    out = run_cli("--image", str(pic), "a red mug", "-o", str(tmp_path / "kept.glb"), "--reference-fill", "0", *short)
    assert out.returncode == 0 and "the picture was framed at" not in out.stderr, out.stderr[-2000:]
