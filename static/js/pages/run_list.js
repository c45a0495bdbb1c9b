// The run list: pick 2 to 4 runs and open them in the compare view; the rows follow live.
import { followRuns } from "../run_wall.js";

followRuns(document.querySelector("[data-run-table]"));

const form = document.querySelector("[data-compare-form]");
if (form) {
  const button = form.querySelector("[data-compare-selected]");
  const hint = form.querySelector("[data-compare-hint]");
  const boxes = [...form.querySelectorAll("[data-compare-pick]")];
  const update = () => {
    const picked = boxes.filter((b) => b.checked).length;
    button.disabled = picked < 2;
    for (const box of boxes) box.disabled = !box.checked && picked >= 4;
    hint.textContent = picked ? `${picked} selected${picked >= 4 ? " (the most a compare shows)" : ""}` : "Tick 2 to 4 runs to see them side by side.";
  };
  for (const box of boxes) box.addEventListener("change", update);
  // One tidy URL: /compare/?runs=1,2,3 rather than runs=1&runs=2&runs=3.
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    // Oldest first: the first run is the baseline the others are measured against.
    const ids = boxes.filter((b) => b.checked).map((b) => Number(b.value)).sort((a, b) => a - b);
    location.assign(`${form.action}?runs=${ids.join(",")}`);
  });
  update();
}
