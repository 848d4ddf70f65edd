// The submit form: show the chosen attack's parameters, offer the chosen model's labels as targets,
// and gather the filled-in parameters into the one `params` JSON field POST /jobs takes.
(function () {
  "use strict";
  const form = document.getElementById("submit-form");
  if (!form) return;
  const attack = document.getElementById("attack");
  const goal = document.getElementById("goal");
  const model = form.elements["model"];
  const target = document.getElementById("target_label");

  function showAttack() {
    for (const box of form.querySelectorAll(".params")) box.hidden = box.dataset.attack !== attack.value;
  }
  function showTargets() {
    document.getElementById("target-row").hidden = goal.value !== "targeted";
    for (const option of target.options) {
      if (option.dataset.model) option.hidden = option.dataset.model !== model.value;
    }
    const chosen = target.selectedOptions[0];
    if (goal.value !== "targeted" || (chosen && chosen.hidden)) target.value = "";
  }

  function typed(input) {
    const raw = input.value.trim();
    switch (input.dataset.kind) {
      case "integer": return parseInt(raw, 10);
      case "number": return Number(raw);
      case "boolean": return raw === "true";
      case "json":
        try { return JSON.parse(raw); } catch (err) { return raw; }  // the server says what is wrong
      default: return raw;
    }
  }

  form.addEventListener("submit", function () {
    const params = {};
    const box = form.querySelector(`.params[data-attack="${attack.value}"]`);
    for (const input of box.querySelectorAll("[data-param]")) {
      if (input.value.trim() !== "") params[input.dataset.param] = typed(input);
    }
    document.getElementById("params").value = JSON.stringify(params);
    if (goal.value !== "targeted") target.value = "";
  });
  // A refused form comes back with the parameters that were sent: put them back in their inputs.
  function restoreParams() {
    let sent;
    try { sent = JSON.parse(document.getElementById("params").value || "{}"); } catch (err) { return; }
    const box = form.querySelector(`.params[data-attack="${attack.value}"]`);
    for (const [name, value] of Object.entries(sent)) {
      const input = box && box.querySelector(`[data-param="${name}"]`);
      if (input) input.value = typeof value === "string" ? value : JSON.stringify(value);
    }
  }

  attack.addEventListener("change", showAttack);
  goal.addEventListener("change", showTargets);
  model.addEventListener("change", showTargets);
  showAttack();
  showTargets();
  restoreParams();
})();
