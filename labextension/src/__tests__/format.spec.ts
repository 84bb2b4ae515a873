import { formatExit } from '../format';

describe('formatExit', () => {
  it('says what ended a job: the user, the time limit, the memory limit', () => {
    expect(formatExit({ state: 'cancelled', exit_code: 143 })).toBe(
      '143 (SIGTERM, by you)'
    );
    expect(formatExit({ state: 'cancelled', exit_code: 137 })).toBe(
      '137 (SIGKILL, by you)'
    );
    expect(formatExit({ state: 'timed_out', exit_code: 143 })).toBe(
      '143 (SIGTERM, time limit)'
    );
    expect(
      formatExit({ state: 'failed', exit_code: 137, reason: 'OOMKilled' })
    ).toBe('137 (SIGKILL: out of memory)');
  });

  it('leaves plain exit codes alone, and no code empty', () => {
    expect(formatExit({ state: 'completed', exit_code: 0 })).toBe('0');
    expect(formatExit({ state: 'failed', exit_code: 1 })).toBe('1');
    expect(formatExit({ state: 'cancelled', exit_code: null })).toBe('');
    expect(formatExit({ state: 'queued' })).toBe('');
  });
});
