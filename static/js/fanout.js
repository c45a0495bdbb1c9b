// Fan-out from the playground: one prompt to up to four variants (provider, model, temperature,
// instructions), started together through POST /api/groups/, then watched live in the compare view.

import { apiPost } from "./api.js";

const MAX_VARIANTS = 4;

export class FanOut {
  // collectRequest(): the playground's own request (provider, model, input, instructions, params).
  constructor(root, providers, collectRequest, showError) {
    this.root = root;
    this.providers = providers;
    this.collectRequest = collectRequest;
    this.showError = showError;
    this.list = root.querySelector("[data-variants]");
    this.template = root.querySelector("[data-variant-template]");
    this.addButton = root.querySelector("[data-variant-add]");
    this.sendButton = root.querySelector("[data-fanout-send]");
    this.addButton.addEventListener("click", () => this.add());
    this.sendButton.addEventListener("click", () => this.send());
    root.addEventListener("toggle", () => { if (root.open && !this.rows().length) this.seed(); });
  }

  isOpen() { return this.root.open; }
  rows() { return [...this.list.querySelectorAll("[data-variant]")]; }

  // Two variants to start from: the playground's choice, and the same at another temperature.
  seed() {
    const base = this.collectRequest();
    this.add({ provider: base.provider, model: base.model });
    this.add({ provider: base.provider, model: base.model, temperature: "1.2" });
  }

  add(preset = {}) {
    if (this.rows().length >= MAX_VARIANTS) return;
    const row = this.template.content.firstElementChild.cloneNode(true);
    const providerSelect = row.querySelector("[data-v-provider]");
    const modelSelect = row.querySelector("[data-v-model]");
    for (const provider of this.providers) providerSelect.append(new Option(provider.label, provider.name));
    const fill = () => {
      const provider = this.providers.find((p) => p.name === providerSelect.value);
      modelSelect.replaceChildren(...(provider ? provider.models : []).map((m) => new Option(m, m)));
    };
    providerSelect.addEventListener("change", fill);
    if (preset.provider) providerSelect.value = preset.provider;
    fill();
    if (preset.model) modelSelect.value = preset.model;
    if (preset.temperature) row.querySelector("[data-v-temperature]").value = preset.temperature;
    row.querySelector("[data-v-remove]").addEventListener("click", () => { row.remove(); this.renumber(); });
    this.list.append(row);
    this.renumber();
  }

  renumber() {
    const rows = this.rows();
    rows.forEach((row, i) => { row.querySelector("[data-v-n]").textContent = String(i + 1); });
    this.addButton.disabled = rows.length >= MAX_VARIANTS;
    this.sendButton.textContent = `Send to ${rows.length} variant${rows.length === 1 ? "" : "s"}`;
    this.sendButton.disabled = rows.length < 1;
  }

  variants(base) {
    return this.rows().map((row) => {
      const provider = row.querySelector("[data-v-provider]").value;
      const params = { ...base.params };
      if (!provider.startsWith("simulator")) delete params.metadata;
      const temperature = row.querySelector("[data-v-temperature]").value;
      if (temperature !== "") params.temperature = Number(temperature);
      const variant = { provider, model: row.querySelector("[data-v-model]").value, params };
      const instructions = row.querySelector("[data-v-instructions]").value;
      if (instructions.trim()) variant.instructions = instructions;
      return variant;
    });
  }

  async send() {
    this.showError("");
    const base = this.collectRequest();
    if (!base.input.trim()) {
      this.showError("Write a prompt first.");
      return;
    }
    this.sendButton.disabled = true;
    try {
      const group = await apiPost("/api/groups/", { input: base.input, instructions: base.instructions, variants: this.variants(base) });
      location.assign(group.compare_url);
    } catch (err) {
      this.showError(err.message);
      this.sendButton.disabled = false;
    }
  }
}
