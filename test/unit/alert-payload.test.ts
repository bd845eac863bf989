/**
 * The two webhook formats of an alert: tollgate's JSON (the alert object) and a Slack
 * incoming-webhook message, whose text must not let a subject name notify a whole channel.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { slackMessage, webhookBody, type Alert } from '../../src/alerts/alert.js';
import { parsePolicy } from '../../src/policy/load.js';

const alert: Alert = {
  type: 'tollgate.alert',
  id: 'refusals:spike:%3C!channel%3E:1764064800000',
  kind: 'refusal_spike',
  alert: 'spike',
  firedAt: '2026-11-25T10:01:00.000Z',
  summary: '20 refusals for user <!channel> & co within 10 minutes (alert at 20).',
  subject: { scope: 'user', id: '<!channel> & co' },
  window: { start: '2026-11-25T10:00:00.000Z', end: '2026-11-25T10:10:00.000Z' },
  refusals: { count: 20, threshold: 20 },
  requestId: 'req-1',
  policyVersion: 'abc',
};

describe('alert payloads', () => {
  it('sends the alert object itself in the json format', () => {
    expect(JSON.parse(webhookBody(alert, 'json'))).toEqual(alert);
  });

  it('escapes Slack markup in every text of the Slack format', () => {
    const msg = slackMessage(alert);
    expect(msg.text).toBe('Refusal spike: 20 refusals for user &lt;!channel&gt; &amp; co within 10 minutes (alert at 20).');
    expect(JSON.stringify(msg.blocks)).not.toContain('<!channel>');
    expect(msg.blocks[2]).toEqual({
      type: 'section',
      fields: [
        { type: 'mrkdwn', text: '*Subject*\nuser &lt;!channel&gt; &amp; co' },
        { type: 'mrkdwn', text: '*Window*\n2026-11-25T10:00:00.000Z – 2026-11-25T10:10:00.000Z' },
        { type: 'mrkdwn', text: '*Refusals*\n20 (alert at 20)' },
      ],
    });
  });

  it('the library policy team-budget-alerts declares both formats, three thresholds and the defaults it leaves out', () => {
    const p = parsePolicy(readFileSync(new URL('../../policy/library/team-budget-alerts.yaml', import.meta.url), 'utf8'), 'team-budget-alerts.yaml');
    const a = p.config.alerts;
    expect(a.webhooks.map((w) => [w.id, w.format])).toEqual([
      ['finops', 'json'],
      ['team-channel', 'slack'],
    ]);
    expect(a.budgets[0]!.thresholds).toEqual([50, 80, 100]);
    expect(a.delivery).toEqual({ attempts: 5, backoffMs: 1000, maxBackoffMs: 60_000, timeoutMs: 5000, maxQueue: 10_000, maxPending: 1000 });
  });
});
