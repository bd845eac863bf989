import { describe, expect, it } from 'vitest';
import { messageLines, type LineError } from '../../src/mcp/stdioLines.js';

const PING = '{"jsonrpc":"2.0","id":1,"method":"ping"}';

describe('stdio lines', () => {
  it('passes on a message split across chunks once its newline arrives, as one line', () => {
    const answers: LineError[] = [];
    const read = messageLines((e) => answers.push(e));
    const out = [PING.slice(0, 10), PING.slice(10, 30), `${PING.slice(30)}\r\n`].map((c) => read(Buffer.from(c)).toString('utf8'));
    expect(out).toEqual(['', '', `${PING}\r\n`]);
    expect(answers).toEqual([]);
  });

  it('answers the lines that are not messages and keeps the messages between them in order', () => {
    const answers: LineError[] = [];
    const read = messageLines((e) => answers.push(e));
    const out = read(Buffer.from(`nope\n${PING}\n{"id":7,"method":"ping"}\n${PING.replace('1', '2')}\n{"jsonrpc":"2.0","id":3,"method":"p`));
    expect(out.toString('utf8')).toBe(`${PING}\n${PING.replace('1', '2')}\n`);
    expect(answers.map((a) => [a.id, a.error.code])).toEqual([[null, -32700], [7, -32600]]);
    expect(read(Buffer.from('ing"}\n')).toString('utf8')).toBe('{"jsonrpc":"2.0","id":3,"method":"ping"}\n');
  });

  it('keeps a multi-byte character cut between chunks whole', () => {
    const read = messageLines(() => undefined);
    const line = Buffer.from('{"jsonrpc":"2.0","id":"é","method":"ping"}\n');
    const cut = line.indexOf(0xc3) + 1;
    expect(Buffer.concat([read(line.subarray(0, cut)), read(line.subarray(cut))]).equals(line)).toBe(true);
  });
});
