/**
 * The simulated sampler's output: a real PNG of the requested size whose pixels are a pure
 * function of everything that makes a diffusion image what it is (seed, prompts, steps,
 * checkpoint, size, batch index): a diagonal gradient between two colours with a wave pattern,
 * all drawn from a SHA-256 of those settings.
 */

import { createHash } from 'node:crypto';
import { PNG } from 'pngjs';

/** A PNG (RGB, 8 bits) of `width` × `height` pixels, deterministic for `fingerprint`. */
export function renderImage(width: number, height: number, fingerprint: unknown): Buffer {
  const hash = createHash('sha256').update(JSON.stringify(fingerprint)).digest();
  const byte = (i: number) => hash[i % hash.length] as number;
  const from = [byte(0), byte(1), byte(2)];
  const to = [byte(3), byte(4), byte(5)];
  const fx = ((byte(6) % 12) + 1) * ((2 * Math.PI) / width);
  const fy = ((byte(7) % 12) + 1) * ((2 * Math.PI) / height);
  const phase = (byte(8) / 255) * 2 * Math.PI;
  const amplitude = 24 + (byte(9) % 40);
  // Separable terms, computed once per column and row.
  const tx = new Float64Array(width);
  const wx = new Float64Array(width);
  for (let x = 0; x < width; x++) {
    tx[x] = width > 1 ? x / (width - 1) / 2 : 0;
    wx[x] = Math.sin(x * fx + phase);
  }
  const ty = new Float64Array(height);
  const wy = new Float64Array(height);
  for (let y = 0; y < height; y++) {
    ty[y] = height > 1 ? y / (height - 1) / 2 : 0;
    wy[y] = Math.cos(y * fy - phase);
  }
  const png = new PNG({ width, height, colorType: 2, inputColorType: 6, inputHasAlpha: true });
  const data = png.data;
  let offset = 0;
  for (let y = 0; y < height; y++) {
    const rowT = ty[y] as number;
    const rowW = wy[y] as number;
    for (let x = 0; x < width; x++) {
      const t = (tx[x] as number) + rowT;
      const wave = (wx[x] as number) * rowW * amplitude;
      for (let c = 0; c < 3; c++) {
        const base = (from[c] as number) + ((to[c] as number) - (from[c] as number)) * t;
        const v = base + (c === 1 ? -wave : wave);
        data[offset + c] = v < 0 ? 0 : v > 255 ? 255 : v;
      }
      data[offset + 3] = 255;
      offset += 4;
    }
  }
  return PNG.sync.write(png, { colorType: 2, inputColorType: 6, inputHasAlpha: true });
}
