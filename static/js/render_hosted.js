// Hosted tools with their progress phases: web search (queries, sources), file search (queries,
// results), code interpreter (code as it streams, logs, images) and image generation (partial
// images replacing each other as they sharpen, then the final image).

import { el, externalLink, hostOf, imageDataUrl, itemHead, liveBlock } from "./render_util.js";
import { str } from "./values.js";

function sourceList(sources) {
  const list = el("ul", "sources");
  for (const source of sources) {
    if (!source) continue;
    const url = typeof source === "string" ? source : source.url;
    const li = el("li");
    if (typeof url === "string" && url) {
      li.append(externalLink(url, hostOf(url) || url));
      if (hostOf(url)) li.append(el("span", "muted small", ` ${url}`));
    } else {
      // Non-web sources, e.g. {"type": "api", "name": "oai-weather"}.
      li.append(el("span", "source-other", [source.type, source.name].filter(Boolean).join(": ") || JSON.stringify(source)));
    }
    list.append(li);
  }
  return list;
}

export function webSearchView(node) {
  const head = itemHead("web search");
  const body = el("div", "search-body");
  node.append(head.node, body);
  return {
    update(item) {
      head.update(item);
      body.replaceChildren();
      const action = item.data.action && typeof item.data.action === "object" ? item.data.action : null;
      if (!action) {
        body.append(el("p", "muted small", item.done ? "No search details were sent." : "Searching…"));
        return;
      }
      const queries = [action.query, ...(Array.isArray(action.queries) ? action.queries : [])].filter((q) => typeof q === "string" && q);
      if (action.type === "open_page") {
        const p = el("p", "search-action", "Opened ");
        p.append(externalLink(action.url, action.url));
        body.append(p);
      } else if (action.type === "find_in_page") {
        const p = el("p", "search-action", `Looked for “${str(action.pattern, "")}” in `);
        p.append(externalLink(action.url, action.url));
        body.append(p);
      }
      if (queries.length) {
        const p = el("p", "search-action", "Searched ");
        for (const q of [...new Set(queries)]) p.append(el("span", "query", q));
        body.append(p);
      }
      const sources = Array.isArray(action.sources) ? action.sources : [];
      if (sources.length) {
        body.append(el("div", "part-label", `Sources (${sources.length})`), sourceList(sources));
      }
    },
  };
}

export function fileSearchView(node) {
  const head = itemHead("file search");
  const body = el("div", "search-body");
  node.append(head.node, body);
  return {
    update(item) {
      head.update(item);
      body.replaceChildren();
      const queries = Array.isArray(item.data.queries) ? item.data.queries.filter((q) => typeof q === "string") : [];
      if (queries.length) {
        const p = el("p", "search-action", "Searched ");
        for (const q of queries) p.append(el("span", "query", q));
        body.append(p);
      } else if (!item.done) {
        body.append(el("p", "muted small", "Searching…"));
      }
      const results = Array.isArray(item.data.results) ? item.data.results : [];
      if (results.length) {
        const list = el("ol", "file-results");
        for (const result of results) {
          if (!result || typeof result !== "object") continue;
          const li = el("li");
          li.append(el("span", "cite-file", result.filename || result.file_id || "file"));
          if (Number.isFinite(result.score)) li.append(el("span", "muted small", ` score ${result.score.toFixed(3)}`));
          if (result.text) li.append(el("div", "result-text small", result.text));
          list.append(li);
        }
        body.append(el("div", "part-label", `Results (${results.length})`), list);
      } else if (item.done) {
        body.append(el("p", "muted small", "Results were not included in the stream (request include: file_search_call.results)."));
      }
    },
  };
}

export function codeInterpreterView(node) {
  const head = itemHead("code interpreter");
  const container = el("div", "muted small call-id");
  const code = liveBlock("code python");
  const outputs = el("div", "ci-outputs");
  node.append(head.node, container, code.node, outputs);
  let outputsKey = "";
  return {
    update(item) {
      head.update(item);
      container.textContent = item.data.container_id ? `container ${item.data.container_id}` : "";
      container.hidden = !item.data.container_id;
      code.set(item.code || "");
      const list = Array.isArray(item.data.outputs) ? item.data.outputs : [];
      const key = `${item.done}|${JSON.stringify(list)}`;
      if (key === outputsKey) return;
      outputsKey = key;
      outputs.replaceChildren();
      if (item.done && !list.length) {
        outputs.append(el("p", "muted small", "Outputs were not included in the stream (request include: code_interpreter_call.outputs)."));
      }
      for (const out of list) {
        if (!out || typeof out !== "object") continue;
        if (out.type === "logs") {
          outputs.append(el("div", "part-label", "Output"), el("pre", "code output-log", str(out.logs, "")));
        } else if (out.type === "image" && typeof out.url === "string" && out.url.startsWith("data:image/")) {
          const img = el("img", "generated");
          img.alt = "code interpreter output image";
          img.src = out.url;
          outputs.append(img);
        } else if (out.type === "image") {
          outputs.append(externalLink(out.url, "output image"));
        } else {
          outputs.append(el("pre", "code output-log", JSON.stringify(out, null, 2)));
        }
      }
    },
  };
}

export function imageGenerationView(node) {
  const head = itemHead("image generation");
  const figure = el("figure", "image-figure");
  const img = el("img", "generated");
  const caption = el("figcaption", "muted small");
  figure.append(img, caption);
  figure.hidden = true;
  const prompt = el("p", "revised-prompt small");
  node.append(head.node, figure, prompt);
  let src = null;
  return {
    update(item) {
      head.update(item);
      const data = item.data;
      const final = typeof data.result === "string" && data.result ? data.result : null;
      const partial = item.partial;
      const url = final ? imageDataUrl(final, data.output_format) : partial ? imageDataUrl(partial.b64, partial.format) : null;
      if (url && url !== src) {
        img.src = url;
        src = url;
      }
      figure.hidden = !url;
      img.alt = final ? "generated image" : "partial image";
      img.classList.toggle("partial", !final);
      const facts = [];
      if (final) facts.push("final image");
      else if (partial) facts.push(`partial image ${partial.index !== null ? partial.index + 1 : item.partials} — sharpening…`);
      if (item.partials) facts.push(`${item.partials} partial${item.partials > 1 ? "s" : ""} streamed`);
      for (const key of ["size", "quality", "output_format", "background"]) if (typeof data[key] === "string") facts.push(data[key]);
      caption.textContent = facts.join(" · ");
      prompt.textContent = data.revised_prompt ? `Revised prompt: ${data.revised_prompt}` : "";
      prompt.hidden = !data.revised_prompt;
      if (!url && !item.done) {
        caption.textContent = "Generating…";
      }
    },
  };
}
