import { describe } from 'vitest';
import { MemoryQuotaStore } from '../../src/quota/memory.js';
import { quotaStoreContract } from './store-contract.js';

describe('MemoryQuotaStore', () => {
  let n = 0;
  quotaStoreContract({
    // One process, one ledger: every "replica" is the same store.
    open: (now, count) => {
      const store = new MemoryQuotaStore(now);
      return Array.from({ length: count }, () => store);
    },
    prefix: () => `mem${++n}:`,
  });
});
