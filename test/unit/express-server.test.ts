import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import express, { Router } from 'express';
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

  // The saving rests on what express does with each request (app.handle sets its prototype to
  // app.request, which is then the one it already has). This holds express to it: if an upgrade
  // gave requests or responses another prototype on the way to a route (as a mounted sub-app
  // does), this fails, rather than every request silently paying for the swap again.
  it('leaves a request and response on the prototypes they were born with all the way to a route in a Router', async () => {
    const app = express();
    const seen: { req: boolean; res: boolean; methods: boolean }[] = [];
    const router = Router();
    router.post('/r/:id', express.json(), (req, res) => {
      seen.push({
        req: Object.getPrototypeOf(req) === bornReq,
        res: Object.getPrototypeOf(res) === bornRes,
        methods: typeof req.get === 'function' && typeof res.status === 'function' && req.params.id === '7' && req.body?.a === 1,
      });
      res.status(201).json({ ok: true });
    });
    app.use((_req, _res, next) => next());
    app.use(router);
    const server = expressServer(app);
    const bornReq = app.request as unknown as object;
    const bornRes = app.response as unknown as object;
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const { port } = server.address() as AddressInfo;
      const r = await fetch(`http://127.0.0.1:${port}/r/7`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"a":1}' });
      expect(r.status).toBe(201);
      expect(await r.json()).toEqual({ ok: true });
      expect(seen).toEqual([{ req: true, res: true, methods: true }]);
    } finally {
      await new Promise((r) => server.close(r));
    }
  });
});
