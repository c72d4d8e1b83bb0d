// agent-ops console: progressive enhancement only. Every page and form works without this file.
"use strict";

// Confirm before destructive forms (stop the system, cancel a mission).
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
  }
}, true);

// Approve / Reject in place: the server answers with the decided card, which replaces the pending one.
document.addEventListener("submit", async (event) => {
  const form = event.target;
  if (!form.matches("form[data-inplace]") || event.defaultPrevented) return;
  event.preventDefault();
  const card = form.closest(".card");
  for (const button of card.querySelectorAll("button")) button.disabled = true;
  try {
    const response = await fetch(form.action, {
      method: "POST", body: new FormData(form), credentials: "same-origin", headers: {"x-console-fetch": "1"},
    });
    if (!response.ok) throw new Error(String(response.status));
    card.outerHTML = await response.text();
  } catch (error) {
    window.location.reload();
  }
});

// Live events: poll for rows after the newest one shown, put them on top.
const rows = document.getElementById("event-rows");
if (rows && rows.dataset.feed) {
  const live = document.getElementById("live");
  const poll = async () => {
    if (!live || live.checked) {
      try {
        const response = await fetch(`${rows.dataset.feed}&after_id=${rows.dataset.lastId}`, {
          credentials: "same-origin", headers: {"x-console-fetch": "1"},
        });
        if (response.ok) {
          const feed = await response.json();
          if (feed.count > 0) {
            rows.insertAdjacentHTML("afterbegin", feed.html);
            rows.dataset.lastId = String(feed.last_id);
            document.getElementById("no-events")?.remove();
            for (const row of rows.querySelectorAll("tr:not(.seen)")) row.classList.add("seen", "new");
          }
        }
      } catch (error) { /* the next poll tries again */ }
    }
    window.setTimeout(poll, 2000);
  };
  for (const row of rows.querySelectorAll("tr")) row.classList.add("seen");
  window.setTimeout(poll, 2000);
}

// An active mission's page refreshes itself until the mission is finished, but never under someone typing.
const main = document.querySelector("main[data-refresh]");
if (main) {
  const typing = () => [...document.querySelectorAll("input:not([type=hidden]), textarea")]
    .some((field) => field === document.activeElement || field.value !== field.defaultValue);
  const refresh = () => {
    if (typing()) window.setTimeout(refresh, Number(main.dataset.refresh));
    else window.location.reload();
  };
  window.setTimeout(refresh, Number(main.dataset.refresh));
}
