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
  // SKU and name of the product a picture shows, when the drop's catalog knows it
  return el("span", { class: "product" }, [item.sku, item.name].filter(Boolean).join(" · "));
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
        el("span", { class: "score" }, hit.score.toFixed(3)))),
    more);
}

function showResults(title, hits) {
  $("drop-view").hidden = true;
  $("search-view").hidden = false;
  $("results-title").textContent = title;
  $("results").replaceChildren(...hits.map(card));
  say(hits.length ? "" : "No images found.");
}

function filters(params) {
  for (const name of ["drop", "category", "color", "sku"]) {
    if ($(name).value.trim()) params.set(name, $(name).value.trim());
  }
  return params;
}

async function search(event) {
  if (event) event.preventDefault();
  const params = filters(new URLSearchParams({ q: $("q").value, kind: $("kind").value, k: "24" }));
  say("Searching…");
  try {
    const hits = await api(`/api/search?${params}`);
    if (location.hash !== "" && location.hash !== "#/") history.pushState(null, "", "#/");
    showResults(`Results for “${$("q").value.trim()}”`, hits);
  } catch (err) {
    say(err.message, true);
  }
}

async function similar(hit) {
  say("Looking for similar images…");
  try {
    const params = new URLSearchParams({ drop: hit.drop, path: hit.path, kind: hit.kind, k: "24" });
    showResults(`More like ${hit.path.split("/").pop()} (${hit.drop})`, await api(`/api/similar?${params}`));
  } catch (err) {
    say(err.message, true);
  }
}

async function searchByPicture(file) {
  if (!file) return;
  say("Looking for products like your picture…");
  try {
    const params = filters(new URLSearchParams({ kind: $("kind").value, k: "24" }));
    // The picture's bytes are the body; the server keeps nothing of it.
    const hits = await api(`/api/similar?${params}`, { method: "POST", body: file,
                                                       headers: { "Content-Type": file.type || "application/octet-stream" } });
    if (location.hash !== "" && location.hash !== "#/") history.pushState(null, "", "#/");
    showResults(`Like your picture ${file.name}`, hits);
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
    if (!$("results").children.length && location.hash.startsWith("#/") && !location.hash.startsWith("#/drop/")) {
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
          product(r))))));
    }
    parts.push(el("h3", {}, `Campaign images (${d.campaign.length})`));
    parts.push(el("div", { class: "grid" }, ...d.campaign.map((c) => el("article", { class: "card campaign-image" },
      thumb(c.thumbnail, c.path),
      el("table", { class: "facts" }, ...[["brief", c.brief], ["prompt", c.prompt], ["by", c.model || c.generator],
        ["finish", c.finish_reason], ["cost", c.estimated_cost_usd == null ? "–" : `$${c.estimated_cost_usd}`],
        ["products", c.references.map((r) => r.sku).filter(Boolean).join(", ")]]
        .map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, String(v ?? "")))))))));
    view.replaceChildren(...parts);
    $("search-view").hidden = true;
    view.hidden = false;
    say("");
  } catch (err) {
    say(err.message, true);
  }
}

function route() {
  const m = location.hash.match(/^#\/drop\/(.+)$/);
  if (m) showDrop(decodeURIComponent(m[1]));
  else { $("drop-view").hidden = true; $("search-view").hidden = false; }
}

async function login(event) {
  event.preventDefault();
  try {
    await api("/api/login", { method: "POST", headers: { "Content-Type": "application/json" },
                              body: JSON.stringify({ token: $("token").value }) });
    $("login").hidden = true;
    say("");
    loadDrops();
    loadFacets();
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
loadDrops();
loadFacets();
route();
