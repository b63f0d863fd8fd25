"""Session 51: image jobs on the GPU came out broken (the view prior alone: cube 0.25-0.37, chair 0.07-0.19;
session 37: 0.76 / 0.42) while the same code on the CPU draws the cube at 0.72. Same view prior weights since
session 26. This prints the library versions and compares the view prior's outputs on one reference picture
across CPU fp32, CUDA fp32 and CUDA fp16, with and without CUDA graphs: the reference's image embedding and
latent, and the CFG noise prediction at four timesteps and cameras.
    python tools/device/view_prior_parity.py"""
import torch
import diffusers
import transformers

from backend.bench.image import DrawnObject, object_index, reference_camera, reference_png, settings_for
from backend.engine.guidance.models import load_guidance
from backend.engine.guidance.zero123 import relative_camera
from backend.engine.reference import to_reference_image
from backend.engine.reference_image import prepare_reference

print(f"torch {torch.__version__} cuda {torch.version.cuda} cudnn {torch.backends.cudnn.version()}, "
      f"transformers {transformers.__version__}, diffusers {diffusers.__version__}")
obj = DrawnObject("cube", "red", 1)
el, az = reference_camera(1, object_index("cube"))
settings = settings_for(obj, 1, el, az, {}, "", "builtin", "cuda")
image = prepare_reference(reference_png(obj, el, az), fill=settings.reference_fill)
ref = to_reference_image(image, settings)
g = torch.Generator().manual_seed(0)
t = torch.tensor([100, 400, 700, 950])
cams = relative_camera(torch.tensor([10.0, 20.0, 0.0, 30.0]), torch.tensor([az + 30, az + 90, az + 180, az - 60]),
                       1.8, el, az, 1.8)
out = {}
for name, device, half, graphs in [("cpu32", "cpu", False, False), ("cuda32", "cuda", False, False),
                                   ("cuda16", "cuda", True, False), ("cuda16graph", "cuda", True, True),
                                   ("cuda32graph", "cuda", False, True)]:
    if device == "cuda" and not torch.cuda.is_available():
        continue
    guidance = load_guidance("builtin", device, guidance_type="zero123", half_precision=half)
    guidance.use_cuda_graphs = graphs and device == "cuda"
    guidance.set_reference(ref)
    shape = (4, guidance.unet.config.in_channels // 2, guidance.unet.config.sample_size, guidance.unet.config.sample_size)
    noisy = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    eps = [guidance.predict_noise_image(noisy.to(device), t.to(device), cams.to(device), 3.0).float().cpu().clone()
           for _ in range(2)]
    out[name] = dict(emb=guidance.ref_embedding.float().cpu(), lat=guidance.ref_latent.float().cpu(), eps=eps[1])
    print(f"{name}: dtype {guidance.dtype} emb norm {out[name]['emb'].norm():.4f} latent mean/std "
          f"{out[name]['lat'].mean():.4f}/{out[name]['lat'].std():.4f} eps std {eps[1].std():.4f} "
          f"repeat diff {(eps[0] - eps[1]).abs().max():.2e}")
base = out["cpu32"]
for name, o in out.items():
    print(f"{name} vs cpu32: emb cos {torch.nn.functional.cosine_similarity(o['emb'].flatten(), base['emb'].flatten(), 0):.5f} "
          f"latent max diff {(o['lat'] - base['lat']).abs().max():.4f}, eps rel err per t "
          + " ".join(f"{((o['eps'][i] - base['eps'][i]).norm() / base['eps'][i].norm()):.4f}" for i in range(4)))
