// The search page: every number and picture on it comes from the JSON API (see assets_pkg/web/server.py).
"use strict";

const $ = (id) => document.getElementById(id);

async function api(url, options) {
  const response = await fetch(url, { credentials: "same-origin", ...options });
  if (response.status === 401) {
    $("login").hidden = false;
    throw new Error("sign in with the server's access token");
  }
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function say(text, isError = false) {
  $("message").textContent = text;
  $("message").className = isError ? "error" : "";
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

function thumb(src, alt) {
  return el("img", { src, alt, loading: "lazy", decoding: "async", width: "320", height: "320" });
}

function product(item) {
  // SKU, name, category and colour of the product a picture shows, when the drop's catalog knows it
  return el("span", { class: "product" }, [item.sku, item.name].filter(Boolean).join(" · "),
    ...(item.category || item.color ? [el("span", { class: "labels" }, [item.category, item.color].filter(Boolean).join(", "))] : []));
}

// Why a hit was found, as the API says it: its SKU is the query, the query's words are in its name or catalog,
// or its picture is like the query.
function why(hit) {
  return (hit.why || []).map((w) => (w === "words" ? `words: ${hit.words.join(" ")}` : w)).join(" + ");
}

function card(hit) {
  const name = hit.path.split("/").pop();
  const more = el("button", { class: "more-like-this", type: "button",
                              onclick: () => similar(hit) }, "More like this");
  return el("article", { class: "card result", "data-drop": hit.drop, "data-path": hit.path, "data-kind": hit.kind,
                         "data-sku": hit.sku || "" },
    thumb(hit.thumbnail, name),
    el("div", { class: "facts" },
      el("span", { class: "name", title: hit.path }, name),
      product(hit),
      el("span", { class: "meta" },
        el("a", { href: `#/drop/${encodeURIComponent(hit.drop)}`, class: "drop-link" }, hit.drop),
        el("span", { class: `kind ${hit.kind}` }, hit.kind),
        el("span", { class: "score", title: `similarity of the picture to the query (cosine); rank score ${hit.score}` },
          hit.similarity.toFixed(2))),
      el("span", { class: "why" }, why(hit)),
      ...(hit.added ? [el("span", { class: "added", title: "when its file was added" },
                          `added ${hit.added.slice(0, 16).replace("T", " ")} UTC`)] : [])),
    more);
}

function showResults(title, hits) {
  $("drop-view").hidden = true;
  $("search-view").hidden = false;
  $("results-title").textContent = title;
  $("results").replaceChildren(...hits.map(card));
  say(hits.length ? "" : "No images found.");
}

// What narrows a search, in its URL and in the API's parameters alike (the same names as the CLI's options).
const FILTERS = ["drop", "category", "color", "sku", "not", "min_similarity", "sort"];

function filters(params) {
  for (const name of FILTERS) {
    if ($(name).value.trim()) params.set(name, $(name).value.trim());
  }
  return params;
}

// Every search is a link: the form writes the search into the URL (#/search?q=…&drop=…), and route() runs what
// the URL says, so a reload, back and forward, and a link sent to a colleague show the same results.
function search(event) {
  if (event) event.preventDefault();
  const params = filters(new URLSearchParams({ q: $("q").value.trim(), kind: $("kind").value }));
  const hash = `#/search?${params}`;
  if (location.hash === hash) route();  // the same search again: no hashchange, so run it here
  else location.hash = hash;
}

function similar(hit) {
  location.hash = `#/similar?${new URLSearchParams({ drop: hit.drop, path: hit.path, kind: hit.kind })}`;
}

function fillForm(params) {
  $("q").value = params.get("q") || "";
  $("kind").value = params.get("kind") || "all";
  for (const name of FILTERS) $(name).value = params.get(name) || "";
}

async function runSearch(params) {
  fillForm(params);
  say("Searching…");
  try {
    const hits = await api(`/api/search?${filters(new URLSearchParams({ q: $("q").value, kind: $("kind").value, k: "24" }))}`);
    showResults(`Results for “${$("q").value.trim()}”`, hits);
    loadModel();
  } catch (err) {
    say(err.message, true);
  }
}

async function runSimilar(params) {
  say("Looking for similar images…");
  try {
    const args = new URLSearchParams({ drop: params.get("drop") || "", path: params.get("path") || "",
                                       kind: params.get("kind") || "product", k: "24" });
    showResults(`More like ${args.get("path").split("/").pop()} (${args.get("drop")})`, await api(`/api/similar?${args}`));
  } catch (err) {
    say(err.message, true);
  }
}

async function searchByPicture(file) {
  if (!file) return;
  say("Looking for products like your picture…");
  try {
    const params = filters(new URLSearchParams({ kind: $("kind").value, k: "24" }));
    if ($("q").value.trim()) params.set("q", $("q").value.trim());  // "this bag, in black": picture and words
    // The picture's bytes are the body; the server keeps nothing of it.
    const hits = await api(`/api/similar?${params}`, { method: "POST", body: file,
                                                       headers: { "Content-Type": file.type || "application/octet-stream" } });
    // The picture stays in this browser: a search by it cannot be linked, and the URL says so.
    history.pushState(null, "", "#/picture");
    showResults(`Like your picture ${file.name} (a search by an uploaded picture cannot be linked)`, hits);
  } catch (err) {
    say(err.message, true);
  }
}

async function loadFacets() {
  try {
    const facets = await api("/api/facets");
    const fill = (id, label, values) => $(id).replaceChildren(el("option", { value: "" }, label),
      ...values.map((f) => el("option", { value: f.value }, `${f.value} (${f.images})`)));
    fill("category", "Any category", facets.category);
    fill("color", "Any colour", facets.color);
    $("skus").replaceChildren(...facets.sku.map((f) => el("option", { value: f.value })));
  } catch (err) {
    say(err.message, true);
  }
}

async function loadDrops() {
  try {
    const drops = await api("/api/drops");
    const options = drops.map((d) => el("option", { value: d.drop }, `${d.drop} (${d.indexed})`));
    $("drop").replaceChildren(el("option", { value: "" }, "All drops"), ...options);
    if (!$("results").children.length && (location.hash === "#/" || location.hash === "")) {
      $("results-title").textContent = "Drops";
      $("results").replaceChildren(...drops.map((d) => el("article", { class: "card" },
        el("div", { class: "facts" },
          el("a", { href: `#/drop/${encodeURIComponent(d.drop)}`, class: "name drop-link" }, d.drop),
          el("span", {}, `${d.images} images, ${d.indexed} indexed`),
          el("span", {}, `${d.briefs} briefs, ${d.campaign_images} campaign images`)))));
    }
  } catch (err) {
    say(err.message, true);
  }
}

async function showDrop(drop) {
  say("Loading the drop…");
  try {
    const d = await api(`/api/drops/${encodeURIComponent(drop)}`);
    const view = $("drop-view");
    const parts = [el("h2", {}, `${d.drop}: ${d.images} images, ${d.indexed} indexed`)];
    if (d.sheets.drop) parts.push(el("img", { class: "sheet", src: d.sheets.drop, alt: `contact sheet of ${d.drop}`, loading: "lazy" }));
    parts.push(el("h3", {}, `Briefs (${d.briefs.length})`));
    for (const b of d.briefs) {
      parts.push(el("div", { class: "brief" },
        el("strong", {}, b.id), el("p", {}, b.prompt),
        el("p", {}, [b.query ? `Query: ${b.query}` : "", b.products.length ? `Products: ${b.products.join(", ")}` : ""]
          .filter(Boolean).join(" · ")),
        el("div", { class: "refs" }, ...b.references.map((r) => el("figure", { "data-sku": r.sku },
          thumb(r.thumbnail, r.path),
          el("figcaption", {}, `${r.path.split("/").pop()} ${r.via === "sku" ? "(named)" : r.score.toFixed(3)}`),
          product(r),
          el("span", { class: "used-in" }, r.used_in.length ? `in ${r.used_in.map((p) => p.split("/").pop()).join(", ")}` : ""))))));
    }
    const dups = d.duplicates || { same_shot: [], near_identical: [], blank: [] };
    if (dups.same_shot.length || dups.near_identical.length) {
      // Nothing is deleted: these are for a person to look at; search shows one picture of a same shot.
      parts.push(el("h3", {}, `Duplicates: ${dups.same_shot.length} same-shot groups, ${dups.near_identical.length} near-identical`));
      for (const [kind, label] of [["same_shot", "Same shot"], ["near_identical", "Near-identical (CLIP)"]]) {
        for (const group of dups[kind]) {
          parts.push(el("div", { class: `duplicates ${kind}` }, el("strong", {}, label),
            ...group.map((g) => el("figure", {}, thumb(g.thumbnail, g.path), el("figcaption", {}, g.path)))));
        }
      }
    }
    parts.push(el("h3", {}, `Campaign images (${d.campaign.length})`));
    parts.push(el("label", { class: "reviewer" }, "Your name, for your decisions: ",
      el("input", { id: "reviewer", maxlength: "80", value: localStorage.getItem("reviewer") || "",
                    onchange: (e) => localStorage.setItem("reviewer", e.target.value.trim()) })));
    // Weakest first: the candidate whose product looks least like its photos is the one to look at.
    const weakest = (c) => (c.scores && c.scores.product_fidelity != null ? c.scores.product_fidelity : 2);
    const ordered = d.campaign.slice().sort((a, b) => weakest(a) - weakest(b) || a.path.localeCompare(b.path));
    const flagged = ordered.filter((c) => c.scores && c.scores.flagged.length).length;
    const grid = el("div", { class: "grid" }, ...ordered.map((c) => campaignCard(d.drop, c)));
    parts.push(el("label", { class: "flagged-only" },
      el("input", { type: "checkbox", id: "flagged-only", onchange: (e) => {
        for (const card of grid.children) card.hidden = e.target.checked && card.dataset.flagged !== "true";
      } }), ` Flagged only (${flagged})`));
    parts.push(grid);
    view.replaceChildren(...parts);
    $("search-view").hidden = true;
    view.hidden = false;
    say("");
  } catch (err) {
    say(err.message, true);
  }
}

function facts(c) {
  const rows = [["brief", c.brief], ["prompt", c.prompt], ["by", c.model || c.generator],
    ["finish", c.finish_reason], ["cost", c.estimated_cost_usd == null ? "–" : `$${c.estimated_cost_usd}`],
    ["products", c.references.map((r) => r.sku).filter(Boolean).join(", ")],
    ["references", c.references.map((r) => r.path.split("/").pop()).join(", ")]];
  if (c.base_image) rows.push(["base image", c.base_image]);
  if (c.revision) rows.push(["revised from", c.revision.parent.split("/").pop()], ["note", c.revision.note]);
  return el("table", { class: "facts" }, ...rows.map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, String(v ?? "")))));
}

function scoreLine(s) {
  const num = (v) => (v == null ? "–" : v.toFixed(3));
  return el("div", { class: `scores ${s.flagged.length ? "flagged" : ""}` },
    el("span", { class: "score-values" }, `product ${num(s.product_fidelity)} · prompt ${num(s.prompt_match)}`),
    ...(s.weakest_product ? [el("span", { class: "weakest" }, `${s.weakest_product} looks least like its photos`)] : []),
    ...s.flagged.map((why) => el("span", { class: "flag" }, `Flagged: ${why}`)));
}

function reviewLine(c) {
  if (!c.review) return "Not reviewed yet";
  const when = new Date(c.review.time).toLocaleString();
  return `${c.review.decision === "approve" ? "Approved" : "Rejected"} by ${c.review.reviewer}, ${when}` +
    (c.review.note ? `: ${c.review.note}` : "");
}

function campaignCard(drop, c) {
  // Every text here goes in as text (el() appends strings as text nodes), so a note is shown, never run.
  const note = el("textarea", { class: "note", maxlength: "1000", rows: "2", placeholder: "Note (what to change)" });
  note.value = c.review && c.review.note ? c.review.note : "";
  const status = el("p", { class: `review ${c.review ? c.review.decision : "none"}` }, reviewLine(c));
  const decide = (decision) => async () => {
    const reviewer = ($("reviewer").value || "").trim();
    if (!reviewer) { say("Type your name first (above the campaign images).", true); $("reviewer").focus(); return; }
    localStorage.setItem("reviewer", reviewer);
    try {
      const r = await api("/api/review", { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ drop, path: c.path, decision, note: note.value, reviewer }) });
      c.review = r.review.decision === "clear" ? null : r.review;
      c.history = r.history;
      status.textContent = reviewLine(c);
      status.className = `review ${c.review ? c.review.decision : "none"}`;
      history.replaceChildren(...historyItems(c));
      say("");
    } catch (err) { say(err.message, true); }
  };
  const revise = async () => {
    if (!note.value.trim()) { say("Write in the note what to change, then revise.", true); note.focus(); return; }
    say(`Revising ${c.path.split("/").pop()}…`);
    try {
      const r = await api("/api/revise", { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ drop, path: c.path, note: note.value, reviewer: ($("reviewer").value || "").trim() }) });
      say(`Made ${r.path.split("/").pop()} from ${r.parent.split("/").pop()}.`);
      showDrop(drop);
    } catch (err) { say(err.message, true); }
  };
  const history = el("ol", { class: "history" }, ...historyItems(c));
  return el("article", { class: "card campaign-image", "data-path": c.path,
                         "data-flagged": String(Boolean(c.scores && c.scores.flagged.length)) },
    thumb(c.thumbnail, c.path),
    el("span", { class: "name" }, c.path.split("/").pop()),
    ...(c.scores ? [scoreLine(c.scores)] : []),
    facts(c), status, note,
    el("div", { class: "actions" },
      el("button", { type: "button", class: "approve", onclick: decide("approve") }, "Approve"),
      el("button", { type: "button", class: "reject", onclick: decide("reject") }, "Reject"),
      el("button", { type: "button", class: "clear", onclick: decide("clear") }, "Clear"),
      el("button", { type: "button", class: "revise", onclick: revise }, "Revise")),
    ...(c.renditions && c.renditions.length ? [renditionStrip(drop, c)] : []),
    el("details", {}, el("summary", {}, "History"), history));
}

function renditionLine(r) {
  if (!r.review) return r.width ? `${r.width}x${r.height}` : "unknown channel";
  return `${r.review.decision === "approve" ? "Approved" : "Rejected"} by ${r.review.reviewer}` +
    (r.review.note ? `: ${r.review.note}` : "");
}

// Each channel's cut as publishing makes it; a story's safe zones (covered by the app's UI) drawn on it.
// A reviewer may reject one channel's crop and keep the image approved for the others.
function renditionStrip(drop, c) {
  return el("div", { class: "renditions" }, ...c.renditions.map((r) => {
    const status = el("span", { class: `review ${r.review ? r.review.decision : "none"}` }, renditionLine(r));
    // Sizes go through the CSSOM: the page's Content-Security-Policy refuses inline style attributes.
    const frame = el("div", { class: "rendition-frame" },
      el("img", { src: r.preview, alt: `${c.path.split("/").pop()} for ${r.channel}`, loading: "lazy" }));
    if (r.width) frame.style.aspectRatio = `${r.width} / ${r.height}`;
    for (const [side, px] of [["top", r.safe_top], ["bottom", r.safe_bottom]]) {
      if (!px) continue;
      const zone = el("div", { class: `safe-zone ${side}`, title: `${px} px kept clear for the app's UI` });
      zone.style.height = `${(100 * px / r.height).toFixed(3)}%`;
      frame.append(zone);
    }
    const decide = (decision) => async () => {
      const reviewer = ($("reviewer").value || "").trim();
      if (!reviewer) { say("Type your name first (above the campaign images).", true); $("reviewer").focus(); return; }
      try {
        const got = await api("/api/review", { method: "POST", headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ drop, path: c.path, channel: r.channel, decision, reviewer }) });
        r.review = got.review.decision === "clear" ? null : got.review;
        status.textContent = renditionLine(r);
        status.className = `review ${r.review ? r.review.decision : "none"}`;
        say("");
      } catch (err) { say(err.message, true); }
    };
    return el("figure", { class: "rendition", "data-channel": r.channel }, frame,
      el("figcaption", {}, el("strong", {}, r.channel), " ", status),
      el("div", { class: "actions" },
        el("button", { type: "button", class: "approve", onclick: decide("approve") }, "Keep"),
        el("button", { type: "button", class: "reject", onclick: decide("reject") }, "Reject crop"),
        el("button", { type: "button", class: "clear", onclick: decide("clear") }, "Clear")));
  }));
}

function historyItems(c) {
  return (c.history || []).slice().reverse().map((h) => el("li", {},
    `${h.decision} by ${h.reviewer}, ${new Date(h.time).toLocaleString()}${h.note ? `: ${h.note}` : ""}`));
}

// Which model's collections answer: it changes in one step after CLIP_MODEL changes and every drop is built.
async function loadModel() {
  try {
    const m = await api("/api/model");
    $("model").textContent = `model: ${m.model}`;
    $("model").title = `collection ${m.collection}`;
  } catch (err) {
    $("model").textContent = "";
  }
}

// The filter lists must hold their options before a linked search can select them.
let ready = null;
let routed = false;  // the first route finds the drop list that `ready` just drew

async function route() {
  await ready;
  const first = !routed;
  routed = true;
  const [page, query] = location.hash.replace(/^#\//, "").split("?");
  const params = new URLSearchParams(query || "");
  if (page.startsWith("drop/")) showDrop(decodeURIComponent(page.slice("drop/".length)));
  else if (page === "search") runSearch(params);
  else if (page === "similar") runSimilar(params);
  else if (page === "picture") {
    showResults("Search by picture", []);
    say("A search by an uploaded picture cannot be linked: choose the picture again.");
  } else {
    fillForm(new URLSearchParams());
    $("drop-view").hidden = true; $("search-view").hidden = false;
    if (!first) {  // back to the list from a search: draw it afresh
      $("results").replaceChildren();
      loadDrops();
    }
  }
}

async function login(event) {
  event.preventDefault();
  try {
    await api("/api/login", { method: "POST", headers: { "Content-Type": "application/json" },
                              body: JSON.stringify({ token: $("token").value }) });
    $("login").hidden = true;
    say("");
    ready = Promise.all([loadDrops(), loadFacets()]);
    loadModel();
    route();
  } catch (err) {
    say(err.message, true);
  }
}

$("search-form").addEventListener("submit", search);
$("picture").addEventListener("change", (e) => searchByPicture(e.target.files[0]));
$("picture-drop").addEventListener("dragover", (e) => { e.preventDefault(); $("picture-drop").classList.add("over"); });
$("picture-drop").addEventListener("dragleave", () => $("picture-drop").classList.remove("over"));
$("picture-drop").addEventListener("drop", (e) => {
  e.preventDefault();
  $("picture-drop").classList.remove("over");
  searchByPicture(e.dataTransfer.files[0]);
});
$("login").addEventListener("submit", login);
window.addEventListener("hashchange", route);
if (!location.hash) history.replaceState(null, "", "#/");
ready = Promise.all([loadDrops(), loadFacets()]);
loadModel();
route();
