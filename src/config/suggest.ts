/**
 * "Did you mean" for a mistyped name: the closest known name by edit distance, when it is close
 * enough to be a typo rather than a different word. Used by the CLI, the policy loader and `check`.
 */

/** Levenshtein distance between `a` and `b`, case-insensitive (a transposition counts as 2). */
export function editDistance(a: string, b: string): number {
  const s = a.toLowerCase();
  const t = b.toLowerCase();
  let prev = Array.from({ length: t.length + 1 }, (_, j) => j);
  for (let i = 1; i <= s.length; i++) {
    const row = [i];
    for (let j = 1; j <= t.length; j++) {
      row[j] = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (s[i - 1] === t[j - 1] ? 0 : 1));
    }
    prev = row;
  }
  return prev[t.length]!;
}

/**
 * The known name closest to `word`, or undefined when none is within about a third of its length
 * (at least 1, at most 3 edits): `teir` → `tier`, `defaultTeir` → `defaultTier`.
 */
export function closest(word: string, known: Iterable<string>): string | undefined {
  const limit = Math.min(3, Math.max(1, Math.floor(word.length / 3)));
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of known) {
    const d = editDistance(word, candidate);
    if (d < bestDistance || (d === bestDistance && best !== undefined && candidate < best)) {
      best = candidate;
      bestDistance = d;
    }
  }
  return bestDistance <= limit ? best : undefined;
}

/** `; did you mean X?` when a known name is close to `word`, else the empty string. */
export function didYouMean(word: string, known: Iterable<string>): string {
  const hit = closest(word, known);
  return hit === undefined ? '' : `; did you mean ${hit}?`;
}
