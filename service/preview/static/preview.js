// Feedback from the /preview order page to the service's real feedback endpoint (CDS Hooks 2.0 shape).
// Card and suggestion ids come from data-* attributes; every text this script writes goes in as textContent.
"use strict";

function feedbackItem(button, card) {
  const item = { card: card.dataset.cardUuid, outcomeTimestamp: new Date().toISOString() };
  if (button.dataset.feedback === "accept") {
    item.outcome = "accepted";
    item.acceptedSuggestions = [{ id: button.dataset.suggestion }];
    return item;
  }
  item.outcome = "overridden";
  const option = card.querySelector("select.override-reason").selectedOptions[0];
  const comment = card.querySelector("input.override-comment").value.trim();
  const reason = {};
  if (option && option.value !== "") {
    reason.reason = { system: option.dataset.system, code: option.dataset.code, display: option.dataset.display };
  }
  if (comment) {
    reason.userComment = comment;
  }
  if (Object.keys(reason).length > 0) {
    item.overrideReason = reason;
  }
  return item;
}

async function sendFeedback(button, card) {
  const status = card.querySelector("output.feedback-status");
  const item = feedbackItem(button, card);
  const url = "/cds-services/" + encodeURIComponent(card.dataset.service) + "/feedback";
  let response;
  try {
    response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", "Accept": "application/json" },
      body: JSON.stringify({ feedback: [item] }),
    });
  } catch (error) {
    status.textContent = "Feedback not sent: " + error;
    return;
  }
  const body = await response.json().catch(() => null);
  if (response.ok) {
    status.textContent = "Feedback stored: " + item.outcome;
    card.dataset.feedback = item.outcome;
    card.querySelectorAll("button[data-feedback]").forEach((b) => { b.disabled = true; });
  } else {
    const issues = body && Array.isArray(body.issue) ? body.issue.map((i) => i.diagnostics).join("; ") : "";
    status.textContent = "Feedback refused: HTTP " + response.status + (issues ? " — " + issues : "");
  }
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-feedback]");
  const card = button ? button.closest("article[data-card-uuid]") : null;
  if (card) {
    sendFeedback(button, card);
  }
});
