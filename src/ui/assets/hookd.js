// hookd dashboard: the little that htmx does not do.

// Copy buttons: <button data-copy="#element-id"> copies that element's text.
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const source = document.querySelector(button.dataset.copy);
  navigator.clipboard.writeText(source.textContent.trim()).then(
    () => { button.textContent = "Copied"; },
    () => { button.textContent = "Select and copy by hand"; },
  );
});

// An agent's inbox as a live list: <ul data-stream="/ui/agents/{id}/stream">. The stream is
// the API's, passed through with the session cookie (EventSource cannot send a bearer header);
// EventSource reconnects by itself and resumes with Last-Event-ID.
function connectInboxes() {
  for (const list of document.querySelectorAll("ul[data-stream]:not([data-connected])")) {
    list.dataset.connected = "yes";
    const source = new EventSource(list.dataset.stream);
    const status = document.querySelector(list.dataset.status);
    const show = (text, tone) => {
      if (!status) return;
      status.textContent = text;
      status.className = `badge ${tone}`;
    };
    source.onopen = () => show("live", "on");
    source.onerror = () => show("reconnecting…", "pending");
    source.addEventListener("message", (event) => {
      const message = JSON.parse(event.data);
      if (list.querySelector(`[data-id="${CSS.escape(message.id)}"]`)) return;
      list.querySelector(".empty")?.remove();
      const item = document.createElement("li");
      item.dataset.id = message.id;
      const when = document.createElement("div");
      when.className = "muted";
      when.textContent = `${message.created_at} · ${message.kind}`;
      const body = document.createElement("pre");
      body.textContent = JSON.stringify(message.content, null, 2);
      item.append(when, body);
      list.prepend(item);
    });
  }
}
document.addEventListener("DOMContentLoaded", connectInboxes);
