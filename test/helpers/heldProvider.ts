/**
 * A provider that answers exactly as the demo provider does, but only once the test lets it: a call
 * stays in flight, past its reservation and inside the provider, for as long as the test needs,
 * with no clock involved. Put it in place with `gateway.replacePolicy(gateway.policy, providers)`.
 */
import { createDemoProvider } from '../../src/providers/demo.js';
import type { CompletionRequest, Provider } from '../../src/providers/provider.js';

export interface HeldProvider {
  provider: Provider;
  /** Calls received so far, held or answered. */
  readonly received: number;
  /** Resolves once the provider has received its first call. */
  readonly arrived: Promise<void>;
  /** Lets every held call answer, and every later one answer at once. */
  release(): void;
}

export function heldProvider(name = 'demo'): HeldProvider {
  const demo = createDemoProvider(name);
  let received = 0;
  let arrive!: () => void;
  const arrived = new Promise<void>((resolve) => (arrive = resolve));
  let open!: () => void;
  const gate = new Promise<void>((resolve) => (open = resolve));
  const hold = async (req: CompletionRequest) => {
    received += 1;
    arrive();
    await gate;
    return req;
  };
  return {
    provider: {
      name,
      kind: 'demo',
      complete: async (req) => demo.complete(await hold(req)),
      stream: async (req, onText) => demo.stream(await hold(req), onText),
    },
    get received() {
      return received;
    },
    arrived,
    release: () => open(),
  };
}
