/**
 * The error a promise rejects with, for tests of what an SDK raises: the test fails when the
 * promise resolves, or rejects with something else than `type`.
 */
import { expect } from 'vitest';

export async function rejection<T>(p: Promise<unknown>, type: abstract new (...args: never[]) => T): Promise<T> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(type);
  return err as T;
}
