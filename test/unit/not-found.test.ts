import { describe, expect, it } from 'vitest';
import { nearestEndpoint, notFoundError, SERVED_ENDPOINTS } from '../../src/http/notFound.js';

describe('the 404 names the endpoint meant', () => {
  it('suggests /v1/chat/completions for /v1/chat/completion', () => {
    const err = notFoundError('POST', '/v1/chat/completion');
    expect(err.code).toBe('NOT_FOUND');
    expect(err.message).toMatch(/^There is no POST \/v1\/chat\/completion on this gateway\. Did you mean POST \/v1\/chat\/completions\? Served: /);
    expect(err.details.suggestion).toBe('/v1/chat/completions');
  });

  it('suggests /v1/messages for /v1/message and /V1/Messages/, and /mcp for /mcp/', () => {
    expect(nearestEndpoint('/v1/message')?.path).toBe('/v1/messages');
    expect(nearestEndpoint('/V1/Messages/')?.path).toBe('/v1/messages');
    expect(nearestEndpoint('/mcp/')?.path).toBe('/mcp');
  });

  it('says which method a served path takes', () => {
    const err = notFoundError('GET', '/v1/chat/completions');
    expect(err.message).toContain('/v1/chat/completions takes POST, not GET.');
  });

  it('suggests nothing for a path that is not close to any', () => {
    for (const path of ['/nope', '/', '/admin', '/v2/everything']) expect(nearestEndpoint(path), path).toBeUndefined();
  });

  it('lists every served endpoint in the message and details', () => {
    const err = notFoundError('GET', '/nope');
    for (const e of SERVED_ENDPOINTS) expect(err.message).toContain(`${e.methods.join('|')} ${e.path}`);
    expect(err.details.endpoints).toEqual(SERVED_ENDPOINTS.map((e) => e.path));
  });
});
