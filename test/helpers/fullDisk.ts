import { writeSync } from 'node:fs';

/**
 * A disk with `space` bytes left (Infinity: not full), as a `write` option for the stores that take
 * one: the real `fs.writeSync` on the real file, cut short where the space ends, as the kernel does,
 * and ENOSPC once nothing is left.
 */
export class Disk {
  space = Infinity;
  readonly write = (fd: number, data: Buffer, offset: number, length: number): number => {
    if (this.space <= 0) throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    const n = Math.min(length, this.space);
    this.space -= n;
    return writeSync(fd, data, offset, n);
  };
}
