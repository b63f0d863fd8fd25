"""Experiments only (imported by tools/yaw/yaw.py): which of a camera-aware prior's two view signals makes
SDS pin the yaw? "fixed_camera" hands the UNet the azimuth-0 camera for every render (the view word still
follows the camera); "no_view_word" drops the view suffix from every prompt (the camera still follows)."""
import torch
from backend.engine.guidance import base as B
from backend.engine.guidance import stable_diffusion as SD

_orig_condition = SD.camera_condition
_orig_for_views = B.PromptEmbeddings.for_views


def fixed_camera():
    def condition(c2w: torch.Tensor) -> torch.Tensor:
        from backend.engine.cameras import orbit_cameras
        from backend.prior import CAMERA
        front = orbit_cameras(15.0, [0.0], CAMERA["distance_min"], CAMERA["fovy_min"]).c2w.to(c2w.device)
        return _orig_condition(front).expand(c2w.shape[0], -1)
    SD.camera_condition = condition


def no_view_word():
    B.PromptEmbeddings.for_views = lambda self, views: _orig_for_views(self, [""] * len(views))
