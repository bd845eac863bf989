/**
 * HTML for the console's pages, built as strings on the server: every value is escaped where it
 * is put in, no script or style is inline (the Content-Security-Policy forbids both), and data for
 * the chart travels in a `application/json` block that no browser executes.
 */

/** Text escaped for an HTML element or a quoted attribute. */
export function esc(value: unknown): string {
  return String(value ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** Markup already escaped, so that `html` does not escape it again. */
export class Safe {
  constructor(readonly text: string) {}
  toString(): string {
    return this.text;
  }
}

/** A template tag that escapes every interpolated value except Safe markup (and arrays of it). */
export function html(strings: TemplateStringsArray, ...values: unknown[]): Safe {
  let out = strings[0]!;
  values.forEach((v, i) => {
    out += piece(v) + strings[i + 1]!;
  });
  return new Safe(out);
}

function piece(v: unknown): string {
  if (v instanceof Safe) return v.text;
  if (Array.isArray(v)) return v.map(piece).join('');
  if (v === undefined || v === null || v === false) return '';
  return esc(v);
}

/** JSON for a `<script type="application/json">` block: `<` is escaped so the block cannot be closed early. */
export function jsonBlock(id: string, value: unknown): Safe {
  const text = JSON.stringify(value).replace(/</g, '\\u003c');
  return new Safe(`<script type="application/json" id="${esc(id)}">${text}</script>`);
}

export interface TableColumn<T> {
  head: string;
  cell: (row: T) => unknown;
  /** Right-aligned. */
  numeric?: boolean;
  /** The cell's `data-field` (tests and scripts find values by it). */
  data?: string;
}

/** A table with a header row; `rowData` names each row in `data-key`. */
export function table<T>(id: string, columns: TableColumn<T>[], rows: T[], rowKey?: (row: T) => string): Safe {
  if (rows.length === 0) return html`<p class="empty" id="${id}">None.</p>`;
  return html`<table id="${id}"><thead><tr>${columns.map((c) => html`<th${c.numeric ? new Safe(' class="num"') : ''}>${c.head}</th>`)}</tr></thead><tbody>${rows.map(
    (r) =>
      html`<tr${rowKey ? html` data-key="${rowKey(r)}"` : ''}>${columns.map((c) => html`<td${c.numeric ? new Safe(' class="num"') : ''}${c.data ? html` data-field="${c.data}"` : ''}>${c.cell(r)}</td>`)}</tr>`,
  )}</tbody></table>`;
}

export interface Viewer {
  user: string;
  role: 'read-write' | 'read-only';
  csrf: string;
}

const NAV: [string, string][] = [
  ['/console', 'Overview'],
  ['/console/budgets', 'Budgets'],
  ['/console/refusals', 'Refusals'],
  ['/console/keys', 'Keys'],
  ['/console/policy', 'Policy'],
];

/** The page around a console view: navigation, who is signed in, sign-out. */
export function layout(title: string, viewer: Viewer | undefined, body: Safe, opts: { current?: string; chart?: boolean } = {}): string {
  const nav = viewer
    ? html`<nav>${NAV.map(([href, label]) => html`<a href="${href}"${href === opts.current ? new Safe(' aria-current="page"') : ''}>${label}</a>`)}<span class="who">${viewer.user} (${viewer.role})</span><form method="post" action="/console/logout"><input type="hidden" name="_csrf" value="${viewer.csrf}"><button type="submit">Sign out</button></form></nav>`
    : '';
  const chart = opts.chart ? html`<link rel="stylesheet" href="/console/assets/uPlot.min.css"><script src="/console/assets/uPlot.iife.min.js" defer></script>` : '';
  return `<!doctype html>\n${html`<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>${title} · tollgate</title><link rel="icon" href="data:,"><link rel="stylesheet" href="/console/assets/console.css">${chart}<script src="/console/assets/console.js" defer></script></head><body><header><strong>tollgate</strong>${nav}</header><main><h1>${title}</h1>${body}</main></body></html>`.text}`;
}
