// tollgate console: draws the daily charts from the JSON blocks the server put in the page, with
// uPlot. No other script runs on the console's pages (their Content-Security-Policy allows only
// files served by tollgate itself).
(function () {
  'use strict';

  function readJson(id) {
    var el = document.getElementById(id);
    return el ? JSON.parse(el.textContent || '[]') : null;
  }

  function seconds(day) {
    return Date.parse(day + 'T00:00:00Z') / 1000;
  }

  function width(el) {
    return Math.max(320, Math.min(el.clientWidth || 800, 1100));
  }

  function chart(el, opts, data) {
    if (typeof window.uPlot !== 'function' || !el) return;
    opts.width = width(el);
    opts.height = 240;
    new window.uPlot(opts, data, el);
  }

  function spendChart() {
    var points = readJson('trend-data');
    if (!points) return;
    var data = [
      points.map(function (p) { return seconds(p.day); }),
      points.map(function (p) { return p.costMicroUsd / 1e6; }),
      points.map(function (p) { return p.tokens; }),
    ];
    chart(document.getElementById('trend'), {
      scales: { x: { time: true }, usd: {}, tokens: {} },
      series: [
        {},
        { label: 'Spend (USD)', scale: 'usd', stroke: '#1f6feb', width: 2, value: function (u, v) { return v == null ? '-' : '$' + v.toFixed(4); } },
        { label: 'Tokens', scale: 'tokens', stroke: '#d97706', width: 2 },
      ],
      axes: [{}, { scale: 'usd', label: 'USD' }, { scale: 'tokens', side: 1, label: 'tokens', grid: { show: false } }],
    }, data);
  }

  function refusalChart() {
    var points = readJson('refusal-data');
    if (!points) return;
    chart(document.getElementById('refusal-trend'), {
      scales: { x: { time: true } },
      series: [{}, { label: 'Refusals', stroke: '#b91c1c', width: 2, fill: 'rgba(185,28,28,0.08)' }],
      axes: [{}, { label: 'refusals' }],
    }, [points.map(function (p) { return seconds(p.day); }), points.map(function (p) { return p.refusals; })]);
  }

  function start() {
    spendChart();
    refusalChart();
    document.documentElement.setAttribute('data-charts', 'drawn');
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
