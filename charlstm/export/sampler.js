/* charlstm's sampler for the web: a character-level LSTM, GRU or RNN in plain JavaScript.

   No dependencies, no build step, no network. The model is the JSON that
   `charlstm export --format web` writes into its page (weights as base64: float32, float16,
   or int8 with a float32 scale per row); the equations are torch's (docs/export.md).
   The state and the logits are kept as float32 and each sum is taken in float64 and then
   rounded to float32, so at temperature 0 the page writes what `charlstm sample -t 0` does.

     const model = CharLSTM.fromPage();                 // the page's <script id="charlstm-model">
     for (const ch of CharLSTM.generate(model, {prime: "the ", temperature: 0.8, seed: 1,
                                                 topP: 0.95, length: 200})) { ... }
*/
"use strict";

const CharLSTM = (() => {
  const GATES = { lstm: 4, gru: 3, rnn: 1 };

  function bytesOf(base64) {
    const text = atob(base64);
    const bytes = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
    return bytes;
  }

  function halfToFloat(bits) {  // an IEEE 754 half's bits -> its value (exact in float32)
    const sign = bits & 0x8000 ? -1 : 1;
    const exponent = (bits >> 10) & 0x1f, fraction = bits & 0x3ff;
    if (exponent === 0) return sign * fraction * 2 ** -24;
    if (exponent === 31) return fraction ? NaN : sign * Infinity;
    return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
  }

  function decodeTensor(spec) {  // {shape, dtype, data[, scale]} -> Float32Array, row-major
    const bytes = bytesOf(spec.data), count = spec.shape.reduce((a, b) => a * b, 1);
    const view = new DataView(bytes.buffer), values = new Float32Array(count);
    if (spec.dtype === "float32") {
      for (let i = 0; i < count; i++) values[i] = view.getFloat32(4 * i, true);
    } else if (spec.dtype === "float16") {
      for (let i = 0; i < count; i++) values[i] = halfToFloat(view.getUint16(2 * i, true));
    } else if (spec.dtype === "int8") {  // q * scale of its row: what charlstm dequantizes
      const scale = new DataView(bytesOf(spec.scale).buffer);
      const columns = count / spec.shape[0];
      for (let i = 0; i < count; i++) {
        values[i] = Math.fround(view.getInt8(i) * scale.getFloat32(4 * Math.floor(i / columns), true));
      }
    } else {
      throw new Error("unknown tensor dtype " + spec.dtype);
    }
    return values;
  }

  // out[r] = bias[r] + sum_k W[r, k] x[k], summed in float64
  function matvec(out, W, bias, x, rows, columns) {
    for (let r = 0; r < rows; r++) {
      let sum = 0;
      const row = r * columns;
      for (let k = 0; k < columns; k++) sum += W[row + k] * x[k];
      out[r] = Math.fround(sum) + bias[r];
    }
  }

  const sigmoid = (x) => 1 / (1 + Math.exp(-x));

  class Model {
    constructor(json) {
      const config = json.model_config;
      this.kind = config.model;
      this.layers = config.num_layers;
      this.hidden = config.hidden_size;
      this.embedSize = config.embed_size;
      this.chars = Array.from(json.vocab.chars);  // code points: astral characters stay whole
      this.counts = json.vocab.counts || [];
      this.index = new Map(this.chars.map((ch, i) => [ch, i]));
      const t = {};
      for (const [name, spec] of Object.entries(json.tensors)) t[name] = decodeTensor(spec);
      this.embed = t["embed.weight"];
      this.head = t["head.weight"];
      this.headBias = t["head.bias"];
      this.cells = [];
      const size = GATES[this.kind] * this.hidden;
      for (let l = 0; l < this.layers; l++) {
        this.cells.push({
          wih: t["rnn.weight_ih_l" + l], whh: t["rnn.weight_hh_l" + l],
          bih: t["rnn.bias_ih_l" + l], bhh: t["rnn.bias_hh_l" + l],
          inputSize: l === 0 ? this.embedSize : this.hidden,
          gi: new Float32Array(size), gh: new Float32Array(size),
        });
      }
      this.logits = new Float32Array(this.chars.length);
      this.reset();
    }

    reset() {  // the zero state
      this.h = this.cells.map(() => new Float32Array(this.hidden));
      this.c = this.cells.map(() => new Float32Array(this.hidden));
    }

    idOf(ch) { return this.index.get(ch); }

    // Read one character id; returns the logits of the next (the model's own array).
    step(id) {
      const H = this.hidden;
      let input = this.embed.subarray(id * this.embedSize, (id + 1) * this.embedSize);
      for (let l = 0; l < this.layers; l++) {
        const cell = this.cells[l], h = this.h[l], c = this.c[l];
        const { gi, gh } = cell;
        matvec(gi, cell.wih, cell.bih, input, gi.length, cell.inputSize);
        matvec(gh, cell.whh, cell.bhh, h, gh.length, H);
        if (this.kind === "lstm") {  // gates i, f, g, o
          for (let j = 0; j < H; j++) {
            const i = sigmoid(Math.fround(gi[j] + gh[j]));
            const f = sigmoid(Math.fround(gi[H + j] + gh[H + j]));
            const g = Math.tanh(Math.fround(gi[2 * H + j] + gh[2 * H + j]));
            const o = sigmoid(Math.fround(gi[3 * H + j] + gh[3 * H + j]));
            c[j] = f * c[j] + i * g;
            h[j] = o * Math.tanh(c[j]);
          }
        } else if (this.kind === "gru") {  // gates r, z, n
          for (let j = 0; j < H; j++) {
            const r = sigmoid(Math.fround(gi[j] + gh[j]));
            const z = sigmoid(Math.fround(gi[H + j] + gh[H + j]));
            const n = Math.tanh(gi[2 * H + j] + r * gh[2 * H + j]);
            h[j] = (1 - z) * n + z * h[j];
          }
        } else {
          for (let j = 0; j < H; j++) h[j] = Math.tanh(Math.fround(gi[j] + gh[j]));
        }
        input = h;
      }
      matvec(this.logits, this.head, this.headBias, input, this.logits.length, H);
      return this.logits;
    }

    // The logits of a first character with no prime: the corpus's character counts.
    startLogits() {
      return Float32Array.from(this.chars, (_, i) =>
        this.counts.length ? Math.log(this.counts[i]) : 0);
    }
  }

  // A seeded generator of uniform numbers in [0, 1) (sfc32): the same seed, the same text.
  function random(seed) {
    let a = seed >>> 0, b = Math.floor(seed / 4294967296) >>> 0;
    let c = 0x9e3779b9, d = 0x243f6a88;
    const next = () => {
      const t = (((a + b) | 0) + d) | 0;
      d = (d + 1) | 0;
      a = b ^ (b >>> 9);
      b = (c + (c << 3)) | 0;
      c = (c << 21) | (c >>> 11);
      c = (c + t) | 0;
      return (t >>> 0) / 4294967296;
    };
    for (let i = 0; i < 15; i++) next();
    return next;
  }

  function argmax(logits) {  // the first of equal maxima, as torch's argmax
    let best = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
    return best;
  }

  // The next character id: greedy at temperature 0, else drawn from softmax(logits / T),
  // cut to the likeliest characters whose probabilities reach topP (as charlstm's top-p).
  function pick(logits, temperature, topP, uniform) {
    if (temperature === 0) return argmax(logits);
    const scaled = Array.from(logits, (x) => x / temperature);
    const top = scaled.reduce((a, b) => (b > a ? b : a), -Infinity);  // no spread: any V
    if (!Number.isFinite(top)) return argmax(logits);
    const weights = scaled.map((x) => Math.exp(x - top));
    if (topP < 1) {
      const total = weights.reduce((a, b) => a + b, 0);
      const order = weights.map((_, i) => i).sort((i, j) => weights[j] - weights[i] || i - j);
      let before = 0;
      for (const i of order) {
        const p = weights[i] / total;
        if (before >= topP) weights[i] = 0;  // the likelier ones reach topP on their own
        before += p;
      }
    }
    let u = uniform() * weights.reduce((a, b) => a + b, 0);
    for (let i = 0; i < weights.length; i++) {
      u -= weights[i];
      if (u < 0 && weights[i] > 0) return i;
    }
    return argmax(weights);
  }

  // Yield the characters after `prime`, one at a time (length 0: endless).
  function* generate(model, { prime = "", temperature = 1, topP = 1, seed = null,
                              length = 500 } = {}) {
    if (!(temperature >= 0 && Number.isFinite(temperature))) {
      throw new Error("temperature must be 0 or more, not " + temperature);
    }
    if (!(topP > 0 && topP <= 1)) throw new Error("top-p must be in (0, 1], not " + topP);
    if (!(Number.isInteger(length) && length >= 0)) {
      throw new Error("length must be a whole number, 0 (endless) or more, not " + length);
    }
    const unknown = Array.from(prime).filter((ch) => !model.index.has(ch));
    if (unknown.length) {
      throw new Error("the prime has characters the model never saw: " +
                      [...new Set(unknown)].map((ch) => JSON.stringify(ch)).join(", "));
    }
    const uniform = random(seed === null ? Math.floor(Math.random() * 2 ** 32) : seed);
    model.reset();
    let logits = model.startLogits();
    for (const ch of prime) logits = model.step(model.idOf(ch));
    for (let n = 0; length === 0 || n < length; n++) {
      const id = pick(logits, temperature, topP, uniform);
      yield model.chars[id];
      logits = model.step(id);
    }
  }

  function fromJSON(json) { return new Model(json); }

  function fromPage(id = "charlstm-model") {
    return fromJSON(JSON.parse(document.getElementById(id).textContent));
  }

  return { Model, fromJSON, fromPage, generate, pick, random };
})();
