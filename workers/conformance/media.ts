// Minimal media for the conformance fixtures, as raw bytes (the path under test carries bytes).

/** A 1x1 red pixel PNG. */
const PNG_BASE64 =
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==';

/** A fresh copy of the 1x1 red PNG's bytes. */
export function CONFORMANCE_PNG(): Uint8Array {
  return new Uint8Array(Buffer.from(PNG_BASE64, 'base64'));
}

/** Samples in the fixture WAV: 10 ms of silence at 8 kHz, 8-bit mono. */
const WAV_SAMPLES = 80;

/** A fresh, valid RIFF/WAVE file: PCM, 8 kHz, 8-bit mono, 10 ms of silence (124 bytes). */
export function CONFORMANCE_WAV(): Uint8Array {
  const bytes = Buffer.alloc(44 + WAV_SAMPLES);
  bytes.write('RIFF', 0, 'ascii');
  bytes.writeUInt32LE(36 + WAV_SAMPLES, 4);
  bytes.write('WAVE', 8, 'ascii');
  bytes.write('fmt ', 12, 'ascii');
  bytes.writeUInt32LE(16, 16); // fmt chunk size
  bytes.writeUInt16LE(1, 20); // PCM
  bytes.writeUInt16LE(1, 22); // mono
  bytes.writeUInt32LE(8000, 24); // sample rate
  bytes.writeUInt32LE(8000, 28); // byte rate
  bytes.writeUInt16LE(1, 32); // block align
  bytes.writeUInt16LE(8, 34); // bits per sample
  bytes.write('data', 36, 'ascii');
  bytes.writeUInt32LE(WAV_SAMPLES, 40);
  bytes.fill(128, 44); // 8-bit PCM silence is the midpoint
  return new Uint8Array(bytes);
}
