"use strict";
// jaxcam pages: opacity, class filter, one column alone, large view, keyboard, sortable tables, drill-down.
(function () {
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));

  const opacity = $("#opacity");
  if (opacity) {
    const apply = () => document.documentElement.style.setProperty("--alpha", opacity.value);
    opacity.addEventListener("input", apply);
    apply();
  }

  // Class filter: "pred:<class>" or "true:<class>" keeps the rows of that class, "" keeps all.
  const filter = $("#class-filter");
  if (filter) {
    filter.addEventListener("change", () => {
      const [kind, name] = filter.value ? [filter.value.slice(0, 4), filter.value.slice(5)] : ["", ""];
      $$("tr.row").forEach((row) => {
        row.hidden = kind !== "" && row.dataset[kind] !== name;
      });
    });
  }

  // A column alone: click its header; click again (or another header) to change.
  $$("table.grid").forEach((grid) => {
    $$("th.method", grid).forEach((th) => {
      th.addEventListener("click", () => {
        const col = th.dataset.col;
        const solo = grid.dataset.solo === col ? "" : col;
        grid.dataset.solo = solo;
        $$("th.method", grid).forEach((h) => {
          h.classList.toggle("solo", h.dataset.col === solo);
          h.hidden = solo !== "" && h.dataset.col !== solo;
        });
        $$("td.cell", grid).forEach((td) => { td.hidden = solo !== "" && td.dataset.col !== solo; });
      });
    });
  });

  // Large view and keyboard navigation over the visible cells of a grid.
  const large = $("#large");
  let current = null;
  const visible = (el) => !el.hidden && el.offsetParent !== null;
  function show(cell) {
    current = cell;
    const orig = $("img.orig", cell), heat = $("img.heat", cell);
    $$(".large-orig", large).forEach((img) => { img.src = orig.getAttribute("src"); });
    $$(".large-heat", large).forEach((img) => { img.src = heat.getAttribute("src"); });
    $(".large-caption", large).textContent = cell.dataset.title || "";
    large.hidden = false;
    cell.focus();
  }
  function close() { large.hidden = true; if (current) current.focus(); }
  function neighbour(cell, key) {
    const row = cell.closest("tr");
    const rows = $$("tr.row", cell.closest("tbody")).filter(visible);
    const cells = $$("td.cell", row).filter(visible);
    const c = cells.indexOf(cell), r = rows.indexOf(row);
    if (key === "ArrowLeft") return cells[c - 1];
    if (key === "ArrowRight") return cells[c + 1];
    const other = rows[key === "ArrowUp" ? r - 1 : r + 1];
    if (!other) return undefined;
    return $$("td.cell", other).filter(visible).find((td) => td.dataset.col === cell.dataset.col);
  }
  $$("td.cell").forEach((cell) => cell.addEventListener("click", () => show(cell)));
  if (large) large.addEventListener("click", (e) => { if (e.target === large) close(); });
  document.addEventListener("keydown", (e) => {
    const open = large && !large.hidden;
    if (e.key === "Escape" && open) { close(); e.preventDefault(); return; }
    const cell = open ? current : document.activeElement;
    if (!cell || !cell.matches || !cell.matches("td.cell")) return;
    if (e.key === "Enter" && !open) { show(cell); e.preventDefault(); return; }
    if (!e.key.startsWith("Arrow")) return;
    const next = neighbour(cell, e.key);
    e.preventDefault();
    if (!next) return;
    if (open) show(next); else next.focus();
  });

  // Sortable tables: click a header; numbers sort by value (missing last), text alphabetically.
  $$("table.sortable").forEach((table) => {
    $$("thead th", table).forEach((th, col) => {
      th.addEventListener("click", () => {
        const asc = th.getAttribute("aria-sort") !== "ascending";
        $$("thead th", table).forEach((h) => h.removeAttribute("aria-sort"));
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        const body = table.tBodies[0];
        const key = (tr) => {
          const td = tr.children[col];
          const v = td.dataset.value;
          return v === undefined ? td.textContent.trim() : (v === "" ? NaN : parseFloat(v));
        };
        const rows = Array.from(body.rows);
        rows.sort((a, b) => {
          const x = key(a), y = key(b);
          if (typeof x === "number" || typeof y === "number") {
            if (Number.isNaN(x)) return Number.isNaN(y) ? 0 : 1;
            if (Number.isNaN(y)) return -1;
            return asc ? x - y : y - x;
          }
          return asc ? x.localeCompare(y) : y.localeCompare(x);
        });
        rows.forEach((tr) => body.appendChild(tr));
      });
    });
  });

  // Drill-down: the section named by the URL's #fragment is shown, the others hidden.
  const sections = $$("section.drill");
  if (sections.length) {
    const pick = () => {
      const id = decodeURIComponent(location.hash.slice(1));
      const chosen = sections.find((s) => s.id === id) || sections[0];
      sections.forEach((s) => { s.hidden = s !== chosen; });
      $$(".drill-list a").forEach((a) => a.classList.toggle("current", a.getAttribute("href") === "#" + chosen.id));
    };
    window.addEventListener("hashchange", pick);
    pick();
  }
})();
