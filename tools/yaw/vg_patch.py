"""Prototype, experiments only (imported by tools/yaw/yaw.py): "view guidance", a second CFG term on the
view suffix, eps_u + g (eps_view - eps_u) + gv (eps_view - eps_plain), patched into the SD guidance.
It did not pin the cube's yaw (gv 3, 10): the prior's view words carry no yaw to amplify."""
import torch
from backend.engine.guidance import base as B
from backend.engine.guidance import stable_diffusion as SD
STATE = {"gv": 0.0, "plain": None}
_orig_for_views = B.PromptEmbeddings.for_views
def for_views(self, views):
    cond, uncond = _orig_for_views(self, views)
    plain_keys = [v.split("|")[0] + "|" if "|" in v else "" for v in views]
    STATE["plain"] = torch.cat([self.by_view.get(k, self.by_view[""]) for k in plain_keys], 0)
    return cond, uncond
B.PromptEmbeddings.for_views = for_views
_orig_pn = SD.StableDiffusionGuidance.predict_noise
def predict_noise(self, latents_noisy, t, cond, uncond, guidance_scale):
    gv = STATE["gv"]
    if gv <= 0:
        return _orig_pn(self, latents_noisy, t, cond, uncond, guidance_scale)
    plain = STATE["plain"]
    latent_in = torch.cat([latents_noisy] * 3).to(self.dtype)
    t_in = torch.cat([t] * 3)
    context = torch.cat([cond, uncond, plain]).to(self.dtype)
    out = self._unet(latent_in, t_in, context).float()
    text, negative, pl = out.chunk(3)
    return negative + guidance_scale * (text - negative) + gv * (text - pl)
SD.StableDiffusionGuidance.predict_noise = predict_noise
