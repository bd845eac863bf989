import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { describe, expect, it } from 'vitest';
import { expressServer } from '../../src/http/app.js';

describe('expressServer', () => {
  it('creates requests and responses with express prototypes, so express never swaps them per request', async () => {
    const app = express();
    app.get('/x', (req, res) => {
      res.json({ path: req.path, header: req.header('x-probe') ?? null });
    });
    const server = expressServer(app);
    const born: boolean[] = [];
    // Runs before express's own request listener: what the server made, untouched by app.handle.
    server.prependListener('request', (req: IncomingMessage, res: ServerResponse) => {
      born.push(Object.getPrototypeOf(req) === app.request && Object.getPrototypeOf(res) === app.response);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const { port } = server.address() as AddressInfo;
      const r = await fetch(`http://127.0.0.1:${port}/x`, { headers: { 'x-probe': 'yes' } });
      expect(await r.json()).toEqual({ path: '/x', header: 'yes' });
      expect(born).toEqual([true]);
    } finally {
      await new Promise((r) => server.close(r));
    }
  });
});
