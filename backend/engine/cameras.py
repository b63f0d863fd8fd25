"""Random training cameras, the fixed preview camera, rays, and view-dependent prompt suffixes.

World is Z-up; azimuth 0 looks at the object from +X ("front"), azimuth grows counter-clockwise
seen from above. Cameras follow OpenGL conventions (look down -z, y up), as threestudio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

VIEW_SUFFIXES = {"front": ", front view", "side": ", side view", "back": ", back view",
                 "overhead": ", overhead view"}

# "compass": eight 45-degree azimuth sectors instead of threestudio's front/side/back. A shape with
# four-fold symmetry (a cube, a pyramid) looks the same under every threestudio name, so those names
# cannot tell SDS its yaw and the denoiser's average over yaws rounds the corners off; 45-degree
# sectors pin it. Azimuth 0 looks at the object's front (from +X); positive azimuth turns towards +Y,
# the object's left.
COMPASS_VIEWS = ("front", "front left", "left", "back left", "back", "back right", "right", "front right")
COMPASS_SUFFIXES = {**{v: f", {v} view" for v in COMPASS_VIEWS}, "overhead": ", overhead view"}
VIEW_NAMINGS = {"threestudio": VIEW_SUFFIXES, "compass": COMPASS_SUFFIXES}


def view_suffixes(naming: str = "threestudio") -> dict[str, str]:
    """View name -> prompt suffix of a view naming (the ``view_naming`` setting)."""
    if naming not in VIEW_NAMINGS:
        raise ValueError(f"view_naming must be one of {', '.join(VIEW_NAMINGS)}, got {naming!r}")
    return VIEW_NAMINGS[naming]


@dataclass
class CameraBatch:
    c2w: torch.Tensor          # (B, 4, 4) camera-to-world
    fovy: torch.Tensor         # (B,) radians
    elevation: torch.Tensor    # (B,) degrees, on the CPU
    azimuth: torch.Tensor      # (B,) degrees in [-180, 180), on the CPU
    distance: torch.Tensor     # (B,), on the CPU

    @property
    def positions(self) -> torch.Tensor:
        return self.c2w[:, :3, 3]


def look_at(eye: torch.Tensor, center: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """Camera-to-world matrices (B,4,4) for cameras at ``eye`` looking at ``center``."""
    forward = F.normalize(center - eye, dim=-1)
    right = F.normalize(torch.cross(forward, up, dim=-1), dim=-1)
    true_up = torch.cross(right, forward, dim=-1)
    c2w = torch.zeros(eye.shape[0], 4, 4, dtype=eye.dtype, device=eye.device)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = right, true_up, -forward, eye
    c2w[:, 3, 3] = 1.0
    return c2w


def spherical_to_position(elevation_deg, azimuth_deg, distance) -> torch.Tensor:
    el, az = torch.deg2rad(elevation_deg), torch.deg2rad(azimuth_deg)
    return torch.stack([distance * torch.cos(el) * torch.cos(az), distance * torch.cos(el) * torch.sin(az),
                        distance * torch.sin(el)], dim=-1)


def wrap_azimuth(azimuth_deg: torch.Tensor) -> torch.Tensor:
    return (azimuth_deg + 180.0) % 360.0 - 180.0


def host_to_device(t: torch.Tensor, device) -> torch.Tensor:
    """Copy a small CPU tensor to ``device`` without stalling it: a copy from pageable memory makes the
    CPU wait for all queued GPU work first, which cost a step one sync per camera/light/background
    tensor; pinned memory with non_blocking=True just queues the copy."""
    device = torch.device(device)
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def sample_cameras(settings, batch_size: int, device="cpu", generator: torch.Generator | None = None,
                   views_per_object: int = 1) -> CameraBatch:
    """Draw a batch of training cameras from the settings' ranges, from ``generator`` (a CPU generator;
    None: torch's global RNG).

    Azimuth is stratified over the batch so one step sees the object from all around; elevation
    is drawn half the time uniformly in degrees and half the time uniformly on the sphere, as
    threestudio does, so high elevations are not over-represented.

    ``views_per_object`` V > 1 (a multi-view prior's, ``guidance/multiview.py``): the batch is made of
    ``batch_size / V`` groups of V consecutive cameras, each group at one elevation, distance and field of
    view, its azimuths 360 / V degrees apart from a random start (MVDream's training and SDS cameras).
    """
    s = settings
    g = generator
    v = int(views_per_object)
    if v < 1 or batch_size % v:
        raise ValueError(f"batch size {batch_size} must be a multiple of views_per_object {v}")
    if v > 1:
        return _camera_groups(s, batch_size // v, v, device, g)
    elevation = _elevations(s, batch_size, g)
    azimuth = (torch.rand(batch_size, generator=g) + torch.arange(batch_size)) / batch_size
    azimuth = wrap_azimuth(s.azimuth_min + azimuth * (s.azimuth_max - s.azimuth_min))
    distance = s.distance_min + torch.rand(batch_size, generator=g) * (s.distance_max - s.distance_min)
    fovy_deg = s.fovy_min + torch.rand(batch_size, generator=g) * (s.fovy_max - s.fovy_min)
    return _jittered(s, elevation, azimuth, distance, fovy_deg, device, g)


def _elevations(s, n: int, g) -> torch.Tensor:
    """``n`` elevations (degrees): half the batches uniform in degrees, half uniform on the sphere."""
    u = torch.rand(n, generator=g)
    if torch.rand((), generator=g) < 0.5:
        return s.elevation_min + u * (s.elevation_max - s.elevation_min)
    lo, hi = math.sin(math.radians(s.elevation_min)), math.sin(math.radians(s.elevation_max))
    return torch.rad2deg(torch.asin((lo + u * (hi - lo)).clamp(-1.0, 1.0)))


def _camera_groups(s, groups: int, v: int, device, g) -> CameraBatch:
    """``groups`` objects' V cameras each (``sample_cameras(views_per_object=V)``): elevation, distance and
    field of view drawn per object, the first azimuth stratified over the objects, the others 360 / V apart."""
    elevation = _elevations(s, groups, g)
    first = (torch.rand(groups, generator=g) + torch.arange(groups)) / groups
    first = s.azimuth_min + first * (s.azimuth_max - s.azimuth_min)
    azimuth = wrap_azimuth(first[:, None] + torch.arange(v) * (360.0 / v)).reshape(-1)
    distance = s.distance_min + torch.rand(groups, generator=g) * (s.distance_max - s.distance_min)
    fovy_deg = s.fovy_min + torch.rand(groups, generator=g) * (s.fovy_max - s.fovy_min)
    per_view = lambda t: t.repeat_interleave(v)
    return _jittered(s, per_view(elevation), azimuth, per_view(distance), per_view(fovy_deg), device, g)


def _jittered(s, elevation, azimuth, distance, fovy_deg, device, g) -> CameraBatch:
    """Cameras at these angles, with the settings' eye, look-at and up jitter."""
    batch_size = elevation.shape[0]

    eye = spherical_to_position(elevation, azimuth, distance)
    eye = eye + torch.randn(batch_size, 3, generator=g) * s.camera_perturb
    center = torch.randn(batch_size, 3, generator=g) * s.center_perturb
    up = torch.tensor([0.0, 0.0, 1.0]) + torch.randn(batch_size, 3, generator=g) * s.up_perturb
    c2w = look_at(eye, center, up)
    # Angles stay on the CPU: the trainer reads them to pick prompts, and reading GPU values would
    # make every step wait for the GPU.
    return CameraBatch(host_to_device(c2w, device), host_to_device(torch.deg2rad(fovy_deg), device), elevation,
                       azimuth, distance)


# Camera conditioning of a camera-aware prior (MVDream's, as threestudio's mvdream guidance passes it with
# camera_condition_type "rotation"): the camera-to-world matrix with its translation zeroed, flattened,
# the 16 numbers the UNet's class-embedding projection reads. Rotation only: the built-in prior's
# camera distance is fixed, and direction and roll are what tell a cube's face from its corner.
CAMERA_CONDITION_DIM = 16


def camera_condition(c2w: torch.Tensor) -> torch.Tensor:
    """Float[Tensor, "B 4 4"] camera-to-world -> Float[Tensor, "B 16"]: the rotation, translation zeroed."""
    rotation = c2w.clone()
    rotation[:, :3, 3] = 0.0
    return rotation.flatten(1)


def mirrored_camera_condition(condition: torch.Tensor) -> torch.Tensor:
    """The condition of the camera that sees the left-right mirror image (Float[Tensor, "B 16"] -> same).

    Flipping a render horizontally shows a mirror-symmetric object as the camera at azimuth -az sees
    it: the world mirrored in y (azimuth is measured from +x towards +y) and the camera's right axis
    negated, R' = S_y R S_x, a proper rotation again (two reflections)."""
    m = condition.reshape(-1, 4, 4).clone()
    m[:, 1, :] = -m[:, 1, :]          # S_y on the left: the world's y row
    m[:, :, 0] = -m[:, :, 0]          # S_x on the right: the camera's right axis
    return m.flatten(1)


def orbit_cameras(elevation_deg: float, azimuths_deg, distance: float, fovy_deg: float, device="cpu") -> CameraBatch:
    """Unjittered cameras on an orbit: the preview camera and turntables."""
    az = torch.as_tensor(list(azimuths_deg), dtype=torch.float32)
    n = az.shape[0]
    el = torch.full((n,), float(elevation_deg))
    dist = torch.full((n,), float(distance))
    eye = spherical_to_position(el, az, dist)
    c2w = look_at(eye, torch.zeros(n, 3), torch.tensor([0.0, 0.0, 1.0]).expand(n, 3))
    return CameraBatch(c2w.to(device), torch.deg2rad(torch.full((n,), float(fovy_deg))).to(device), el, az, dist)


def preview_camera(settings, device="cpu") -> CameraBatch:
    """The fixed 3/4 view used for progress previews: mid distance and field of view."""
    elevation = min(max(15.0, settings.elevation_min), settings.elevation_max)
    return orbit_cameras(elevation, [30.0], 0.5 * (settings.distance_min + settings.distance_max),
                         0.5 * (settings.fovy_min + settings.fovy_max), device)


def camera_rays(cameras: CameraBatch, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray origins and unit directions, (B, H, W, 3) each, through pixel centres."""
    device = cameras.c2w.device
    b = cameras.c2w.shape[0]
    ij = torch.arange(resolution, device=device, dtype=torch.float32) + 0.5
    y, x = torch.meshgrid(ij, ij, indexing="ij")
    focal = 0.5 * resolution / torch.tan(0.5 * cameras.fovy)                      # (B,)
    dirs = torch.stack([(x[None] - 0.5 * resolution) / focal[:, None, None],
                        -(y[None] - 0.5 * resolution) / focal[:, None, None],
                        -torch.ones(b, resolution, resolution, device=device)], dim=-1)
    dirs = torch.einsum("bij,bhwj->bhwi", cameras.c2w[:, :3, :3], dirs)
    dirs = F.normalize(dirs, dim=-1)
    origins = cameras.c2w[:, None, None, :3, 3].expand_as(dirs)
    return origins, dirs


def view_direction(elevation_deg: float, azimuth_deg: float, front_threshold: float = 45.0,
                   overhead_threshold: float = 60.0, naming: str = "threestudio") -> str:
    """The view name of a camera: overhead above the elevation threshold, else by azimuth —
    threestudio's front/side/back by |azimuth| against ``front_threshold``, or with ``naming=
    "compass"`` the 45-degree sector around the azimuth (``COMPASS_VIEWS``)."""
    if elevation_deg > overhead_threshold:
        return "overhead"
    a = ((azimuth_deg + 180.0) % 360.0) - 180.0
    if naming == "compass":
        return COMPASS_VIEWS[int(math.floor((a + 22.5) / 45.0)) % 8]
    a = abs(a)
    if a < front_threshold:
        return "front"
    if a > 180.0 - front_threshold:
        return "back"
    return "side"


def view_prompt(prompt: str, view: str, naming: str = "threestudio") -> str:
    return prompt + view_suffixes(naming)[view]
