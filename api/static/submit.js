// The submit form: show (and enable) only the chosen attack's parameter inputs, and offer the chosen
// model's labels as targets. The server gathers the enabled `param:<attack>:<name>` inputs into
// POST /jobs' `params`, so the form also works without this script.
(function () {
  "use strict";
  const form = document.getElementById("submit-form");
  if (!form) return;
  const attack = document.getElementById("attack");
  const goal = document.getElementById("goal");
  const model = form.elements["model"];
  const target = document.getElementById("target_label");

  function showAttack() {
    for (const box of form.querySelectorAll(".params")) {
      const chosen = box.dataset.attack === attack.value;
      box.hidden = !chosen;
      // disabled inputs are not sent: only the chosen attack's parameters reach the server
      for (const input of box.querySelectorAll("[data-param]")) input.disabled = !chosen;
    }
  }
  function showTargets() {
    document.getElementById("target-row").hidden = goal.value !== "targeted";
    for (const option of target.options) {
      if (option.dataset.model) option.hidden = option.dataset.model !== model.value;
    }
    const chosen = target.selectedOptions[0];
    if (goal.value !== "targeted" || (chosen && chosen.hidden)) target.value = "";
  }

  form.addEventListener("submit", function () {
    if (goal.value !== "targeted") target.value = "";
  });
  attack.addEventListener("change", showAttack);
  goal.addEventListener("change", showTargets);
  model.addEventListener("change", showTargets);
  showAttack();
  showTargets();
})();
