"""Draws resources/examples/lakeside.png: a 512x384 photo-like landscape (sky gradient, sun, hills, lake,
trees, film grain) made procedurally with Pillow, so the repository ships no third-party photograph.

    .venv/bin/python tests/krita/make_example_photo.py
"""

import math
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

WIDTH, HEIGHT = 512, 384
OUT = Path(__file__).resolve().parents[2] / "resources" / "examples" / "lakeside.png"


def draw() -> Image.Image:
    rng = random.Random(7)
    image = Image.new("RGB", (WIDTH, HEIGHT))
    px = image.load()
    horizon = 220
    for y in range(HEIGHT):
        for x in range(WIDTH):
            if y < horizon:  # sky: deep blue at the top to warm haze at the horizon
                t = y / horizon
                px[x, y] = (int(70 + 170 * t), int(120 + 100 * t), int(200 + 30 * t))
            else:  # lake: darker reflection of the sky with ripples
                t = (y - horizon) / (HEIGHT - horizon)
                ripple = 12 * math.sin(x / 9.0 + y * 0.8) * (1 - t)
                px[x, y] = (
                    int(60 + 40 * (1 - t) + ripple),
                    int(95 + 40 * (1 - t) + ripple),
                    int(140 + 30 * (1 - t)),
                )
    d = ImageDraw.Draw(image)
    d.ellipse((360, 60, 420, 120), fill=(255, 236, 170))  # sun
    for base, colour, amp, freq in (
        (horizon - 10, (92, 112, 128), 40, 0.011),
        (horizon, (54, 92, 60), 25, 0.023),
    ):
        points = [(x, base - amp * (0.5 + 0.5 * math.sin(x * freq + base))) for x in range(0, WIDTH + 8, 8)]
        d.polygon([(0, horizon + 1), *points, (WIDTH, horizon + 1)], fill=colour)
    for _ in range(22):  # pine trees on the near shore
        x, h = rng.randint(0, WIDTH), rng.randint(30, 70)
        d.polygon([(x, horizon - h), (x - h // 4, horizon + 2), (x + h // 4, horizon + 2)], fill=(28, 62, 38))
    d.rectangle((150, 250, 210, 262), fill=(120, 70, 40))  # a small boat
    d.polygon([(178, 250), (178, 205), (205, 248)], fill=(235, 230, 220))
    image = image.filter(ImageFilter.GaussianBlur(1.2))
    px = image.load()
    for y in range(HEIGHT):  # film grain so it does not look flat
        for x in range(WIDTH):
            n = rng.randint(-6, 6)
            r, g, b = px[x, y]
            px[x, y] = (max(0, min(255, r + n)), max(0, min(255, g + n)), max(0, min(255, b + n)))
    return image


if __name__ == "__main__":
    OUT.parent.mkdir(parents=True, exist_ok=True)
    draw().save(OUT, optimize=True)
    print(OUT)
