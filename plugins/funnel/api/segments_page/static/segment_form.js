// The Segments page's form: add a segment, or edit the one shown, through the API's one write
// path for definitions (POST /v1/segments, PATCH /v1/segments/{id} with If-Match), after a
// preview (POST /v1/preview). The API checks everything as the catalog does and answers what was
// wrong and the fix; the form shows that message next to the field it names, and nothing is
// saved. Shown only to who may change definitions (GET /v1/access: a write token, or inside
// Airflow a user whom Airflow's auth manager lets edit DAGs). Uses segments.js's helpers.
"use strict";

const FORM_FIELDS = ["segment_id", "name", "kind", "run_at", "owner", "labels", "query", "rule"];
const editing = { segmentId: null, revision: null, original: null };

function formField(name) {
  return $(`f-${name}`);
}

// The definition the form holds, as the API takes it (empty fields left out).
function formDefinition() {
  const definition = {};
  for (const name of FORM_FIELDS) {
    const value = formField(name).value.trim();
    if (!value) continue;
    if (name === "labels") definition.labels = value.split(",").map((label) => label.trim()).filter(Boolean);
    else if (name === "rule") definition.rule = parseRule(value);
    else definition[name] = value;
  }
  return definition;
}

function parseRule(text) {
  try {
    return JSON.parse(text);
  } catch (err) {
    return text; // sent as written: the API names what is wrong with it
  }
}

function showFormMessage(message, field) {
  for (const name of FORM_FIELDS) {
    formField(name).classList.remove("invalid");
    formField(name).removeAttribute("aria-invalid");
  }
  const box = $("f-message");
  box.textContent = message || "";
  box.hidden = !message;
  // "segment 'x': field 'query' ...": mark the field the message names.
  const named = field || (/field '([a-z_]+)'/.exec(message || "") || [])[1];
  if (named && FORM_FIELDS.includes(named)) {
    formField(named).classList.add("invalid");
    formField(named).setAttribute("aria-invalid", "true");
    formField(named).focus();
  }
}

function showPreview(text) {
  const box = $("f-preview-result");
  box.textContent = text || "";
  box.hidden = !text;
}

function previewInWords(preview) {
  const size = `${num(preview.size)}${preview.capped ? " or more (capped)" : ""} users`;
  const sample = preview.sample && preview.sample.length ? `; sample: ${preview.sample.slice(0, 8).join(", ")}` : "";
  const live = preview.against_live;
  const change =
    live && live.version !== null && live.entered !== null ? `; against v${live.version}: +${num(live.entered)} −${num(live.exited)}` : "";
  const refused = live && live.guard ? ` Its next refresh would be refused: ${live.guard}` : "";
  return `Preview: ${size}${sample}${change}.${refused}`;
}

// Open the form: empty (add), or on a segment (edit) as its latest revision defines it (what
// MySQL holds now, and the revision its If-Match names); Save waits until that is read.
async function openEditor(segment) {
  editing.segmentId = segment ? segment.segment_id : null;
  editing.revision = null;
  editing.original = segment ? formValues(segment) : null;
  $("f-save").disabled = Boolean(segment);
  $("editor").dataset.state = "loading";
  if (segment) {
    try {
      const revisions = (await api(segmentPath(segment.segment_id, "/revisions"))).revisions || [];
      const latest = revisions[revisions.length - 1];
      if (latest) {
        editing.revision = latest.revision;
        editing.original = formValues(latest.definition);
      }
    } catch (err) {
      editing.revision = null; // no history readable: saved without If-Match, from the served copy
    }
  }
  $("f-title").textContent = segment ? `Edit ${segment.segment_id}` : "Add a segment";
  for (const name of FORM_FIELDS) formField(name).value = segment ? editing.original[name] : "";
  if (!segment) formField("kind").value = "dynamic";
  formField("segment_id").disabled = Boolean(segment); // a segment's id and kind never change
  formField("kind").disabled = Boolean(segment);
  $("f-comment").value = "";
  showFormMessage("");
  showPreview("");
  $("editor").hidden = false;
  $("f-save").disabled = false;
  $("editor").dataset.state = "open";
  formField(segment ? "name" : "segment_id").focus();
}

// A definition (GET /v1/segments/{id}, or a revision's), as the form's text fields.
function formValues(segment) {
  return {
    segment_id: segment.segment_id,
    name: segment.name || "",
    kind: segment.kind,
    run_at: segment.run_at ? segment.run_at.replace("T", " ").replace("+00:00", "") : "",
    owner: segment.owner || "",
    labels: (segment.labels || []).join(", "),
    query: segment.query || "",
    rule: segment.rule ? JSON.stringify(segment.rule) : "",
  };
}

function closeEditor() {
  $("editor").hidden = true;
  $("editor").dataset.state = "closed";
}

async function previewForm() {
  const definition = formDefinition();
  const request = { segment_id: definition.segment_id || editing.segmentId || undefined, kind: definition.kind };
  if (definition.query) request.query = definition.query;
  else if (definition.rule !== undefined) request.rule = definition.rule;
  showFormMessage("");
  showPreview("Previewing…");
  $("editor").dataset.state = "previewing";
  try {
    showPreview(previewInWords(await api("v1/preview", { method: "POST", body: request })));
    $("editor").dataset.state = "previewed";
  } catch (err) {
    showPreview("");
    showFormMessage(err.message);
    $("editor").dataset.state = "refused";
  }
}

async function saveForm(event) {
  event.preventDefault();
  const definition = formDefinition();
  const comment = $("f-comment").value.trim();
  showFormMessage("");
  $("editor").dataset.state = "saving";
  try {
    let saved;
    if (editing.segmentId) {
      const changes = changedFields(definition);
      if (comment) changes.comment = comment;
      const headers = editing.revision ? { "If-Match": `"${editing.revision}"` } : {};
      saved = await api(segmentPath(editing.segmentId), { method: "PATCH", body: changes, headers });
    } else {
      if (comment) definition.comment = comment;
      saved = await api("v1/segments", { method: "POST", body: definition });
    }
    showPreview(`${saved.preview ? `${previewInWords(saved.preview)} ` : ""}Saved as revision ${saved.revision} of ${saved.segment_id}.`);
    $("editor").dataset.state = "saved";
    window.location.hash = encodeURIComponent(saved.segment_id);
    await loadList();
  } catch (err) {
    showFormMessage(err.message);
    $("editor").dataset.state = "refused";
    if (err.status === 401) handle(err);
  }
}

// What the edit changes, as PATCH takes it: an emptied field is sent as null.
function changedFields(definition) {
  const changes = {};
  for (const name of FORM_FIELDS) {
    if (name === "segment_id" || name === "kind") continue;
    const now = formField(name).value.trim();
    if (now === editing.original[name]) continue;
    changes[name] = now ? definition[name] : null;
  }
  return changes;
}

// Who may change definitions: a write token, or an Airflow user allowed to edit DAGs.
async function loadAccess() {
  let scope = "read";
  try {
    scope = (await api("v1/access")).scope;
  } catch (err) {
    scope = "read";
  }
  document.body.dataset.canDefine = String(scope === "define" || scope === "write");
  $("add-segment").hidden = document.body.dataset.canDefine !== "true";
}

function startForm() {
  $("add-segment").addEventListener("click", () => openEditor(null));
  $("edit-segment").addEventListener("click", async () => {
    openEditor(await api(segmentPath($("detail").dataset.segment)));
  });
  $("f-preview").addEventListener("click", previewForm);
  $("f-cancel").addEventListener("click", closeEditor);
  $("segment-form").addEventListener("submit", saveForm);
  window.addEventListener("funnel:list-loaded", loadAccess);
  window.addEventListener("funnel:segment-shown", () => {
    $("edit-segment").hidden = document.body.dataset.canDefine !== "true";
  });
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", startForm);
else startForm();
