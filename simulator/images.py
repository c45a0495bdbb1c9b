"""Small real PNGs (zlib + struct, no imaging library) for the image-generation scenario.

One deterministic picture (sky, sun, hills) per seed; partial images are the same picture
pixelated in coarser blocks, so each partial is visibly sharper than the one before.
"""

from __future__ import annotations

import base64
import math
import random
import struct
import zlib

SIZE = 64


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def encode_png(pixels: list[list[tuple[int, int, int]]]) -> bytes:
    """RGB rows → PNG bytes (8-bit truecolour, filter 0 on every row)."""
    height, width = len(pixels), len(pixels[0])
    raw = bytearray()
    for row in pixels:
        raw.append(0)
        for red, green, blue in row:
            raw += bytes((red, green, blue))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(bytes(raw), 9))
        + _chunk(b"IEND", b"")
    )


def _mix(a: tuple[int, int, int], b: tuple[int, int, int], t: float) -> tuple[int, int, int]:
    t = min(1.0, max(0.0, t))
    return (
        round(a[0] + (b[0] - a[0]) * t),
        round(a[1] + (b[1] - a[1]) * t),
        round(a[2] + (b[2] - a[2]) * t),
    )


def landscape(seed: str, size: int = SIZE) -> list[list[tuple[int, int, int]]]:
    """A seeded landscape: a sky gradient, a sun and two layers of hills."""
    rng = random.Random(seed)
    sky_top = (rng.randint(20, 80), rng.randint(40, 120), rng.randint(120, 220))
    sky_low = (rng.randint(200, 255), rng.randint(120, 200), rng.randint(80, 160))
    sun = (255, rng.randint(200, 240), rng.randint(80, 140))
    hill_far = (rng.randint(40, 90), rng.randint(90, 140), rng.randint(60, 110))
    hill_near = (rng.randint(20, 60), rng.randint(60, 110), rng.randint(30, 70))
    sun_x, sun_y, radius = rng.uniform(0.2, 0.8) * size, rng.uniform(0.2, 0.45) * size, size * 0.11
    phase_far, phase_near = rng.uniform(0, math.tau), rng.uniform(0, math.tau)
    pixels = []
    for y in range(size):
        row = []
        for x in range(size):
            colour = _mix(sky_top, sky_low, y / size)
            distance = math.hypot(x - sun_x, y - sun_y)
            if distance < radius:
                colour = sun
            elif distance < radius * 1.6:
                colour = _mix(sun, colour, (distance - radius) / (radius * 0.6))
            far = size * (0.62 + 0.08 * math.sin(x / size * 5 + phase_far))
            near = size * (0.78 + 0.06 * math.sin(x / size * 9 + phase_near))
            if y > near:
                colour = _mix(hill_near, (10, 30, 15), (y - near) / size * 2)
            elif y > far:
                colour = hill_far
            row.append(colour)
        pixels.append(row)
    return pixels


def pixelate(
    pixels: list[list[tuple[int, int, int]]], block: int
) -> list[list[tuple[int, int, int]]]:
    """Average each block×block square, the coarse look of an early partial image."""
    if block <= 1:
        return pixels
    size = len(pixels)
    out = [row[:] for row in pixels]
    for top in range(0, size, block):
        for left in range(0, size, block):
            cells = [
                pixels[y][x]
                for y in range(top, min(size, top + block))
                for x in range(left, min(size, left + block))
            ]
            average = tuple(round(sum(c[i] for c in cells) / len(cells)) for i in range(3))
            for y in range(top, min(size, top + block)):
                for x in range(left, min(size, left + block)):
                    out[y][x] = average  # type: ignore[assignment]
    return out


def progressive_pngs(seed: str, partials: int) -> tuple[list[str], str]:
    """(partial images, final image) as base64 PNGs; partials get sharper one by one."""
    picture = landscape(seed)
    blocks = [16, 8, 4][-partials:] if partials else []
    partial_b64 = [
        base64.b64encode(encode_png(pixelate(picture, block))).decode() for block in blocks
    ]
    return partial_b64, base64.b64encode(encode_png(picture)).decode()
