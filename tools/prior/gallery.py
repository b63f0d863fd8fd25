"""The README's props gallery (docs/gallery_props.png) from a `bench quality` output folder: for each prompt
its exported mesh's turntable (the fine mesh's when there is one), two frames (front and front-left), labelled,
four prompts a row, 256 colours.

    python tools/prior/gallery.py OUT_DIR docs/gallery_props.png "a wooden barrel" "a wooden table" ...
"""
import sys
from pathlib import Path

from PIL import Image, ImageDraw

FRAMES = (0, 1)          # the turntable's first two frames: azimuth 0 (front) and 45
COLUMNS = 4
SCALE = 1.5              # the bench's 96 px frames, enlarged to be read in the README


def slug(prompt: str) -> str:
    return prompt.replace(" ", "_")


def turntable(out: Path, prompt: str, seed: int = 0) -> Image.Image:
    jobs = sorted(out.glob(f"jobs/*seed{seed}"))
    for kind in (".fine.turntable.png", ".turntable.png"):
        for job in jobs:
            path = job / (slug(prompt) + kind)
            if path.is_file():
                return Image.open(path).convert("RGB")
    raise SystemExit(f"no turntable for {prompt!r} in {out}/jobs/*seed{seed}")


def main(argv: list[str]) -> None:
    out, target, prompts = Path(argv[0]), Path(argv[1]), argv[2:]
    strips = [turntable(out, p) for p in prompts]
    strips = [s.resize((round(s.width * SCALE), round(s.height * SCALE)), Image.LANCZOS) for s in strips]
    side = strips[0].height                          # square frames side by side
    label_h, pad = 22, 12
    cell_w, cell_h = 2 * side + pad, side + label_h
    rows = (len(prompts) + COLUMNS - 1) // COLUMNS
    sheet = Image.new("RGB", (COLUMNS * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (prompt, strip) in enumerate(zip(prompts, strips)):
        x, y = (i % COLUMNS) * cell_w, (i // COLUMNS) * cell_h
        draw.text((x + 4, y + 4), prompt, fill="black")
        for k, frame in enumerate(FRAMES):
            sheet.paste(strip.crop((frame * side, 0, (frame + 1) * side, side)), (x + k * side, y + label_h))
    target.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(256).save(target, optimize=True)
    print(f"wrote {target} ({sheet.width}x{sheet.height}, {len(prompts)} prompts)")


if __name__ == "__main__":
    main(sys.argv[1:])
