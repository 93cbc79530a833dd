"use strict";
// Sortable tables: a click on a header (or Enter on it) sorts the body rows by that column,
// ascending first, then descending. A cell's data-sort (a number) wins over its text; empty
// cells always go last.
(function () {
  function key(row, column) {
    const cell = row.cells[column];
    if (!cell) return { empty: true };
    const raw = cell.dataset.sort !== undefined ? cell.dataset.sort : cell.textContent.trim();
    if (raw === "" || raw === "\u2013") return { empty: true };
    const number = Number(raw);
    return Number.isFinite(number) ? { number: number } : { text: raw };
  }

  function compare(a, b) {
    if (a.empty || b.empty) return a.empty === b.empty ? 0 : (a.empty ? 1 : -1);
    if (a.number !== undefined && b.number !== undefined) return a.number - b.number;
    return String(a.text ?? a.number).localeCompare(String(b.text ?? b.number), undefined,
                                                    { numeric: true });
  }

  function sortBy(table, header, column) {
    const ascending = header.getAttribute("aria-sort") !== "ascending";
    for (const other of table.tHead.rows[0].cells) other.removeAttribute("aria-sort");
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    const body = table.tBodies[0];
    const rows = Array.from(body.rows).map(function (row, index) {
      return { row: row, key: key(row, column), index: index };
    });
    rows.sort(function (a, b) {
      const empty = (a.key.empty ? 1 : 0) - (b.key.empty ? 1 : 0);
      if (empty !== 0) return empty;
      const order = compare(a.key, b.key);
      return (ascending ? order : -order) || a.index - b.index;
    });
    for (const item of rows) body.appendChild(item.row);
  }

  for (const table of document.querySelectorAll("table.sortable")) {
    Array.from(table.tHead.rows[0].cells).forEach(function (header, column) {
      header.tabIndex = 0;
      header.title = header.title || "sort by this column";
      header.addEventListener("click", function () { sortBy(table, header, column); });
      header.addEventListener("keydown", function (event) {
        if (event.key === "Enter") sortBy(table, header, column);
      });
    });
  }
})();
