import { lastTime, mergeHistory } from '../history';
import { History } from '../tokens';

function series(t: number[], util?: Array<number | null>) {
  return {
    t,
    util: util ?? t.map(x => x),
    mem_used: t.map(() => 1),
    temp: t.map(() => 2),
    power: t.map(() => 3)
  };
}

describe('mergeHistory', () => {
  it('appends only the points newer than those it has', () => {
    const prev: History = { a: series([1, 2, 3]) };
    const merged = mergeHistory(prev, { a: series([2, 3, 4, 5]) }, 0, 100);
    expect(merged.a.t).toEqual([1, 2, 3, 4, 5]);
    expect(merged.a.util).toEqual([1, 2, 3, 4, 5]);
    expect(merged.a.power).toEqual([3, 3, 3, 3, 3]);
  });

  it('keeps a GPU absent from the reply and adds a new one', () => {
    const merged = mergeHistory(
      { a: series([1, 2]) },
      { b: series([3]) },
      0,
      100
    );
    expect(merged.a.t).toEqual([1, 2]);
    expect(merged.b.t).toEqual([3]);
  });

  it('keeps the window (server clock) and at most maxPoints', () => {
    const t = Array.from({ length: 20 }, (_, i) => 1000 + i);
    const windowed = mergeHistory({}, { a: series(t) }, 5, 100);
    expect(windowed.a.t).toEqual([1014, 1015, 1016, 1017, 1018, 1019]);
    const capped = mergeHistory({}, { a: series(t) }, 0, 3);
    expect(capped.a.t).toEqual([1017, 1018, 1019]);
    expect(capped.a.util).toEqual([1017, 1018, 1019]);
  });

  it('does not change its inputs', () => {
    const prev: History = { a: series([1]) };
    mergeHistory(prev, { a: series([2]) }, 0, 10);
    expect(prev.a.t).toEqual([1]);
  });

  it('keeps nulls (samples a device did not give)', () => {
    const merged = mergeHistory({}, { a: series([1, 2], [null, 5]) }, 0, 10);
    expect(merged.a.util).toEqual([null, 5]);
  });
});

describe('lastTime', () => {
  it('is the newest sample over all GPUs, or null', () => {
    expect(lastTime({})).toBeNull();
    expect(
      lastTime({ a: series([1, 7]), b: series([3, 9]), c: series([]) })
    ).toBe(9);
  });
});
