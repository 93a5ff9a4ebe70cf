"""Modest, label-preserving augmentation of an 8-bit image and its instance masks.

Geometry (random crop of an area fraction, small rotation, optional flips, and when enabled
aspect stretch and zoom-out padding) is applied to the image bilinearly and to the masks with
nearest-neighbour sampling; intensity (brightness, contrast, gamma, and when enabled a smooth
bias field, blur and noise) to the image only. The result stays 8-bit, so the model sees augmented
images through exactly the preprocessing the runtime applies at inference.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from ..config import AugmentConfig


def augment(image: np.ndarray, masks: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """image uint8 (H, W, 3), masks bool (n, H, W) -> augmented copies (sizes may change)."""
    if not cfg.enabled:
        return image, masks
    h, w = image.shape[:2]
    # crop: a random window of the given area fraction, same aspect ratio as the image
    frac = rng.uniform(*cfg.scale)
    ch, cw = max(2, round(h * math.sqrt(frac))), max(2, round(w * math.sqrt(frac)))
    y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    image = image[y0 : y0 + ch, x0 : x0 + cw]
    masks = masks[:, y0 : y0 + ch, x0 : x0 + cw]
    angle = rng.uniform(-cfg.rotate_deg, cfg.rotate_deg) if cfg.rotate_deg > 0 else 0.0
    if abs(angle) > 1e-3:
        rot = cv2.getRotationMatrix2D(((cw - 1) / 2.0, (ch - 1) / 2.0), angle, 1.0)
        image = cv2.warpAffine(image, rot, (cw, ch), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        if masks.shape[0]:
            masks = np.stack(
                [cv2.warpAffine(m.astype(np.uint8), rot, (cw, ch), flags=cv2.INTER_NEAREST, borderValue=0).astype(bool) for m in masks]
            )
    if rng.random() < cfg.hflip:
        image, masks = image[:, ::-1], masks[:, :, ::-1]
    if rng.random() < cfg.vflip:
        image, masks = image[::-1], masks[:, ::-1]
    # the stronger options draw from the RNG only when on, so default runs see the same images as before
    if cfg.zoom_out > 0 or cfg.aspect > 0:
        image, masks = _zoom_out_and_stretch(image, masks, cfg, rng)
    # intensity
    x = image.astype(np.float32) / 255.0
    contrast = 1.0 + rng.uniform(-cfg.contrast, cfg.contrast)
    brightness = rng.uniform(-cfg.brightness, cfg.brightness)
    gamma = rng.uniform(*cfg.gamma)
    x = np.clip((x - x.mean()) * contrast + x.mean() + brightness, 0.0, 1.0) ** gamma
    if cfg.bias_field > 0:
        x = x * _bias_field(x.shape[:2], cfg.bias_field, rng)[..., None]
    if cfg.blur > 0 and rng.random() < 0.5:
        sigma = rng.uniform(0.3, cfg.blur)
        x = cv2.GaussianBlur(x, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    if cfg.noise > 0 and rng.random() < 0.5:
        x = x + rng.normal(0.0, rng.uniform(0.0, cfg.noise), size=x.shape[:2]).astype(np.float32)[..., None]
    image = np.clip(np.rint(np.clip(x, 0.0, 1.0) * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image), np.ascontiguousarray(masks)


def _zoom_out_and_stretch(image: np.ndarray, masks: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator):
    """Stretch the width by exp(U(-aspect, aspect)), then pad each side with black by up to zoom_out x the size."""
    if cfg.aspect > 0:
        h, w = image.shape[:2]
        nw = max(2, round(w * math.exp(rng.uniform(-cfg.aspect, cfg.aspect))))
        image = cv2.resize(image, (nw, h), interpolation=cv2.INTER_LINEAR)
        if masks.shape[0]:
            masks = np.stack([cv2.resize(m.astype(np.uint8), (nw, h), interpolation=cv2.INTER_NEAREST).astype(bool) for m in masks])
        else:
            masks = np.zeros((0, h, nw), bool)
    if cfg.zoom_out > 0:
        h, w = image.shape[:2]
        top, bottom = (round(h * rng.uniform(0, cfg.zoom_out)) for _ in range(2))
        left, right = (round(w * rng.uniform(0, cfg.zoom_out)) for _ in range(2))
        image = np.pad(image, ((top, bottom), (left, right), (0, 0)))
        masks = np.pad(masks, ((0, 0), (top, bottom), (left, right)))
    return image, masks


def _bias_field(hw: tuple[int, int], strength: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth multiplicative field: 1 + a linear ramp in a random direction plus a centred quadratic term."""
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy, xx = yy / max(h - 1, 1) - 0.5, xx / max(w - 1, 1) - 0.5
    angle = rng.uniform(0, 2 * math.pi)
    ramp = math.cos(angle) * xx + math.sin(angle) * yy  # within -0.71..0.71
    quad = (xx**2 + yy**2) - 0.17  # about zero-mean
    field = 1.0 + rng.uniform(-strength, strength) * 1.4 * ramp + rng.uniform(-strength, strength) * 2.0 * quad
    return np.clip(field, 0.5, 1.5).astype(np.float32)
