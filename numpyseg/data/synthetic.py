"""Procedural fundus images with exact vessel labels.

`make_fundus` paints a cartoon of a retinal photograph in a few milliseconds:

    background   orange-red, times a smooth random field (+-8 %), times a
                 vignette 1 - a (rho / R)^2 (darker towards the rim)
    optic disc   a bright yellowish disc with a soft edge, off-centre
    macula       a faint dark blob on the other side of the centre
    vessels      trees grown from the optic disc: each branch is a random walk
                 of short straight segments whose width tapers as it goes;
                 side branches split off with smaller widths (0.5-0.8 x) and
                 lower contrast, until the width falls below 1 px
    noise        Gaussian, std `noise`, on every channel
    FOV          a disc of radius R; everything outside it is black (0)

Each vessel segment is a capsule (a line segment thickened by a radius that
varies linearly along it).  A pixel centre at distance d <= r from the segment
is a vessel pixel; inside, the image is darkened by

    D = c * (0.55 + 0.45 sqrt(1 - (d / r)^2))       (c = the branch's contrast)

(a cylinder's absorption profile on a floor, so the vessel edge is visible),
the maximum over overlapping segments, and

    image = background * (1 - D * (0.35, 1.0, 0.7))  (red, green, blue)

like real photographs, where vessels show best in the green channel.  The
label is exactly the set of pixels with D > 0 inside the FOV: the image is
changed by the vessels on those pixels and nowhere else.

Everything is drawn from three generators spawned from one seed (layout and
background, vessels, noise), so a seed gives identical arrays and
``vessels=False`` gives the same background and noise without the vessels.
"""

from __future__ import annotations

import numpy as np

from numpyseg.data.sample import Sample

_VESSEL_CHANNELS = np.array([0.35, 1.0, 0.7], dtype=np.float64)


def _as_rng(seed_or_rng) -> np.random.Generator:
    if isinstance(seed_or_rng, np.random.Generator):
        return seed_or_rng
    return np.random.default_rng(seed_or_rng)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], grid: int = 5) -> np.ndarray:
    """A smooth random field N(0, 1)-valued on a grid x grid lattice, bilinearly upsampled."""
    coarse = rng.standard_normal((grid, grid))
    height, width = shape

    def weights(n):
        pos = np.linspace(0.0, grid - 1.0, n)
        i0 = np.minimum(pos.astype(int), grid - 2)
        return i0, pos - i0

    iy, fy = weights(height)
    ix, fx = weights(width)
    rows = coarse[iy] * (1 - fy)[:, None] + coarse[iy + 1] * fy[:, None]  # (H, grid)
    return rows[:, ix] * (1 - fx)[None, :] + rows[:, ix + 1] * fx[None, :]


def _draw_capsule(darkening: np.ndarray, p0, p1, r0: float, r1: float, contrast: float) -> None:
    """Darken the pixels within the tapered capsule p0-p1 (radii r0 -> r1), in place.

    For a pixel centre q, t = clip(<q - p0, p1 - p0> / |p1 - p0|^2, 0, 1) is its
    projection on the segment, d = |q - (p0 + t (p1 - p0))| its distance and
    r = r0 + t (r1 - r0) the local radius; q is inside when d <= r.
    """
    height, width = darkening.shape
    (y0, x0), (y1, x1) = p0, p1
    reach = max(r0, r1)
    ya, yb = max(int(np.floor(min(y0, y1) - reach)), 0), min(int(np.ceil(max(y0, y1) + reach)) + 1, height)
    xa, xb = max(int(np.floor(min(x0, x1) - reach)), 0), min(int(np.ceil(max(x0, x1) + reach)) + 1, width)
    if ya >= yb or xa >= xb:
        return
    qy = np.arange(ya, yb, dtype=np.float64)[:, None] - y0
    qx = np.arange(xa, xb, dtype=np.float64)[None, :] - x0
    dy, dx = y1 - y0, x1 - x0
    length2 = dy * dy + dx * dx
    t = np.clip((qy * dy + qx * dx) / length2, 0.0, 1.0) if length2 > 0 else np.zeros_like(qy * qx)
    d2 = (qy - t * dy) ** 2 + (qx - t * dx) ** 2
    r = r0 + t * (r1 - r0)
    inside = d2 <= r * r
    if not inside.any():
        return
    profile = 0.55 + 0.45 * np.sqrt(np.clip(1.0 - d2 / (r * r), 0.0, 1.0))
    block = darkening[ya:yb, xa:xb]
    np.maximum(block, np.where(inside, contrast * profile, 0.0), out=block)


def _grow_vessels(rng, shape, disc, centre, radius, max_width):
    """Darkening map D (H, W) of vessel trees grown from the optic disc.

    Branches are grown breadth-first from a queue so that a segment budget, if
    reached, cuts the finest branches and never a trunk.
    """
    darkening = np.zeros(shape, dtype=np.float64)
    size = min(shape)
    step = max(2.0, size / 120.0)
    cy, cx = centre
    side = 1.0 if disc[1] >= cx else -1.0  # disc right of centre: temporal side is to the left
    budget = int(60 * radius / step) + 200

    # (angle, curvature) of the trunks: two arcades curving towards the macula,
    # two shorter nasal trunks, one or two random ones. Angle 0 points to +x,
    # pi/2 to +y (down).
    trunks = [(-1.75, -1.2), (1.75, 1.2), (-0.5, 0.0), (0.5, 0.0)]
    trunks += [(rng.uniform(-np.pi, np.pi), rng.normal(0, 0.3)) for _ in range(int(rng.integers(1, 3)))]
    queue = []
    for k, (angle, bend) in enumerate(trunks):
        if side < 0:
            angle, bend = np.pi - angle, -bend
        width = max_width * (rng.uniform(0.8, 1.0) if k < 2 else rng.uniform(0.55, 0.8))
        contrast = rng.uniform(0.30, 0.45) if rng.random() < 0.5 else rng.uniform(0.2, 0.3)
        queue.append((disc[0], disc[1], angle + rng.normal(0, 0.15), bend / radius, width, contrast, 0))

    segments = 0
    head = 0
    while head < len(queue) and segments < budget:
        y, x, angle, bend, width, contrast, depth = queue[head]
        head += 1
        spacing = rng.uniform(0.12, 0.25) * radius
        for _ in range(int(3 * radius / step)):
            if segments >= budget or width < 1.0:
                break
            angle += bend * step + rng.normal(0.0, 0.5) * np.sqrt(step / radius)
            new_width = width * np.exp(-0.5 * step / radius)
            ny, nx = y + step * np.sin(angle), x + step * np.cos(angle)
            _draw_capsule(darkening, (y, x), (ny, nx), width / 2, new_width / 2,
                          contrast * (0.6 + 0.4 * min(1.0, width / max_width)))
            segments += 1
            y, x, width = ny, nx, new_width
            if (y - cy) ** 2 + (x - cx) ** 2 > radius * radius:
                break
            if depth < 6 and rng.random() < step / spacing:
                child = width * rng.uniform(0.5, 0.8)
                turn = rng.uniform(0.45, 1.05) * rng.choice((-1.0, 1.0))
                queue.append((y, x, angle + turn, rng.normal(0, 0.5) / radius, child,
                              contrast * rng.uniform(0.8, 1.0), depth + 1))
                width *= rng.uniform(0.8, 0.95)
                angle -= 0.3 * turn  # the parent is pushed away from its child
    return darkening


def make_fundus(size=(128, 128), rng=None, *, noise: float = 0.02, vessels: bool = True,
                name: str = "synthetic") -> Sample:
    """A synthetic fundus image with its exact vessel label and FOV.

    Args:
        size: (H, W), or an int for a square image.
        rng: seed, None or np.random.Generator; a seed gives identical arrays.
        noise: std of the Gaussian pixel noise (image values in [0, 1]).
        vessels: False draws the same image without vessels (same seed, same
            background and noise), with an all-zero label.
        name: the Sample's name.

    Returns:
        Sample(name, image float32 (H, W, 3) in [0, 1], label uint8 (H, W) 0/1,
        fov uint8 (H, W) 0/1).
    """
    height, width = (int(size), int(size)) if np.ndim(size) == 0 else (int(size[0]), int(size[1]))
    if height < 16 or width < 16:
        raise ValueError(f"make_fundus needs an image of at least 16x16 pixels, got {height}x{width}")
    seeds = _as_rng(rng).integers(0, 2**63 - 1, size=3)
    layout, vessel_rng, noise_rng = (np.random.default_rng(int(s)) for s in seeds)
    short = min(height, width)

    # Field of view: a disc a little smaller than the image.
    radius = short * layout.uniform(0.43, 0.48)
    cy = height / 2 + layout.uniform(-0.02, 0.02) * short
    cx = width / 2 + layout.uniform(-0.02, 0.02) * short
    yy = np.arange(height, dtype=np.float64)[:, None]
    xx = np.arange(width, dtype=np.float64)[None, :]
    rho2 = (yy - cy) ** 2 + (xx - cx) ** 2
    fov = rho2 <= radius * radius

    # Background colour, slow variations, vignetting.
    base = np.array([layout.uniform(0.72, 0.88), layout.uniform(0.30, 0.42), layout.uniform(0.10, 0.20)])
    shading = (1.0 + 0.08 * _smooth_field(layout, (height, width))) * (
        1.0 - layout.uniform(0.25, 0.45) * rho2 / (radius * radius))
    image = shading[:, :, None] * base

    # Optic disc on one side, macula on the other.
    side = layout.choice((-1.0, 1.0))
    disc_r = short * layout.uniform(0.06, 0.085)
    disc = (cy + layout.uniform(-0.1, 0.1) * radius, cx + side * layout.uniform(0.3, 0.45) * radius)
    dist = np.sqrt((yy - disc[0]) ** 2 + (xx - disc[1]) ** 2)
    glow = 1.0 / (1.0 + np.exp((dist - disc_r) / (0.15 * disc_r)))
    image = image + glow[:, :, None] * np.array([0.12, 0.35, 0.25]) * layout.uniform(0.7, 1.0)
    macula = (cy + layout.uniform(-0.05, 0.05) * radius, cx - side * layout.uniform(0.05, 0.15) * radius)
    spot = np.exp(-((yy - macula[0]) ** 2 + (xx - macula[1]) ** 2) / (2 * (1.6 * disc_r) ** 2))
    image = image * (1.0 - layout.uniform(0.15, 0.3) * spot)[:, :, None]

    # Vessel trees.
    max_width = (3.5 + 4.5 * short / 592.0) * vessel_rng.uniform(0.85, 1.0)
    if vessels:
        darkening = _grow_vessels(vessel_rng, (height, width), disc, (cy, cx), radius, max_width)
        image = image * (1.0 - darkening[:, :, None] * _VESSEL_CHANNELS)
        label = (darkening > 0) & fov
    else:
        label = np.zeros((height, width), dtype=bool)

    if noise > 0:
        image = image + noise_rng.normal(0.0, noise, size=image.shape)
    image = np.clip(image, 0.0, 1.0)
    image[~fov] = 0.0
    return Sample(name=name, image=image.astype(np.float32), label=label.astype(np.uint8),
                  fov=fov.astype(np.uint8))


def make_dataset(n: int, size=(128, 128), seed=0, **options) -> list[Sample]:
    """`n` synthetic samples named synthetic_000, synthetic_001, ...

    Sample i is drawn from its own generator seeded from (seed, i), so a
    dataset is reproducible and its first k samples do not depend on n.
    `options` go to `make_fundus` (noise=..., vessels=...).
    """
    return [make_fundus(size, np.random.default_rng([int(seed), i]), name=f"synthetic_{i:03d}", **options)
            for i in range(int(n))]
