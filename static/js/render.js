// Drawing output items: one view per item type, created once per item node and then updated
// in place as events arrive (render_text.js, render_tools.js, render_hosted.js and render_run.js
// hold the views).
// Model output only ever reaches the DOM through textContent, Text nodes or vetted attributes.

import { cssName } from "./render_util.js";
import { messageView, reasoningView } from "./render_text.js";
import {
  applyPatchView, compactionView, customToolView, functionCallView, genericView, mcpApprovalView, mcpCallView,
  mcpListToolsView, shellCallView, shellOutputView,
} from "./render_tools.js";
import { codeInterpreterView, fileSearchView, imageGenerationView, webSearchView } from "./render_hosted.js";
import { audioView, malformedView, outcomeView } from "./render_run.js";

const VIEWS = {
  message: messageView,
  reasoning: reasoningView,
  function_call: functionCallView,
  custom_tool_call: customToolView,
  mcp_call: mcpCallView,
  mcp_list_tools: mcpListToolsView,
  mcp_approval_request: mcpApprovalView,
  web_search_call: webSearchView,
  file_search_call: fileSearchView,
  code_interpreter_call: codeInterpreterView,
  image_generation_call: imageGenerationView,
  shell_call: shellCallView,
  shell_call_output: shellOutputView,
  compaction: compactionView,
  apply_patch_call: applyPatchView,
  audio: audioView,
  malformed: malformedView,
  outcome: outcomeView,
};
// Item types the Responses API defines that the generic card shows well enough.
const KNOWN_GENERIC = new Set([
  "function_call_output", "computer_call", "computer_call_output", "local_shell_call", "local_shell_call_output",
  "custom_tool_call_output", "mcp_approval_response", "apply_patch_call_output", "program", "program_output",
  "tool_search_call", "tool_search_output", "additional_tools",
]);

const views = new WeakMap(); // item node -> {type, view}

/** Draw `item` into `node`, reusing the view already there when the type is unchanged. */
export function renderItem(item, node) {
  let state = views.get(node);
  if (!state || state.type !== item.type) {
    node.replaceChildren();
    const make = VIEWS[item.type];
    state = { type: item.type, view: make ? make(node) : genericView(node, KNOWN_GENERIC.has(item.type)) };
    views.set(node, state);
  }
  node.className = `item item-${cssName(item.type)}${item.done ? "" : " streaming"}`;
  if (item.chat) node.classList.add("chat");
  state.view.update(item);
}
