// codexlb dashboard: live refresh of the Overview, login status polling, confirmations, copy buttons.
// Every page works without this file; it only saves reloads.
"use strict";

function every(ms, fn) {
  let timer = null;
  const tick = async () => {
    const again = await fn();
    if (again !== false) timer = setTimeout(tick, ms);
  };
  timer = setTimeout(tick, ms);
  return () => clearTimeout(timer);
}

function liveRefresh(box) {
  const url = box.dataset.live;
  every(Number(box.dataset.every) || 5000, async () => {
    if (document.hidden) return true;
    try {
      const response = await fetch(url, { credentials: "same-origin", redirect: "manual" });
      if (response.status !== 200) return response.status >= 500;  // signed out: stop
      box.innerHTML = await response.text();
      box.dataset.updated = String(Date.now());
    } catch (err) {
      // network hiccup: try again next tick
    }
    return true;
  });
}

function pollLoginStatus() {
  const badge = document.getElementById("login-status");
  if (!badge || !badge.dataset.poll) return;
  every(2000, async () => {
    try {
      const response = await fetch(badge.dataset.poll, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!response.ok) return false;
      const state = await response.json();
      badge.textContent = state.status + (state.error ? " – " + state.error : "")
        + (state.account ? " – " + state.account.label + " is in the pool" : "");
      badge.className = "status " + state.status;
      return state.status === "pending";
    } catch (err) {
      return true;
    }
  });
}

function confirmations() {
  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      event.preventDefault();
    }
  });
}

function copyButtons() {
  document.querySelectorAll("button[data-copy]").forEach((button) => {
    const source = document.querySelector(button.dataset.copy);
    if (!source || !navigator.clipboard) return;  // no clipboard (plain http elsewhere): select by hand
    button.hidden = false;
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(source.textContent.trim());
        button.textContent = "Copied";
      } catch (err) {
        button.textContent = "Select and copy it by hand";
      }
    });
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll(".live[data-live]").forEach(liveRefresh);
  pollLoginStatus();
  confirmations();
  copyButtons();
});
