import { describe, expect, it } from 'vitest';
import { compose, type Middleware } from '../../src/pipeline/compose.js';

describe('compose', () => {
  it('runs steps in order around the inner ones', async () => {
    const trace: string[] = [];
    const step = (name: string): Middleware<string[]> => async (ctx, next) => {
      ctx.push(`${name}:in`);
      await next();
      ctx.push(`${name}:out`);
    };
    await compose([step('a'), step('b')])(trace);
    expect(trace).toEqual(['a:in', 'b:in', 'b:out', 'a:out']);
  });

  it('rejects a step that calls next() twice, so nothing is dispatched or charged twice', async () => {
    let inner = 0;
    const twice: Middleware<object> = async (_ctx, next) => {
      await next();
      await next();
    };
    const count: Middleware<object> = async () => {
      inner += 1;
    };
    await expect(compose([twice, count])({})).rejects.toThrow('called next() more than once');
    expect(inner).toBe(1);
  });
});
