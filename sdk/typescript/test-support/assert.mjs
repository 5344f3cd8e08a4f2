// Assertions shared by the SDK tests. Kept outside test/ because node's test runner treats every
// .mjs file under a test/ directory as a test file.

import assert from 'node:assert/strict';

import { RcrtError } from '@rcrt/secrets';

/** A well-formed secret or vault id that no test creates. */
export const NO_SUCH_ID = '01890a5d-ac96-774b-bcce-b302099a8057';

/** Asserts that `promise` rejects with an RcrtError of this status and code. */
export async function rejectsWith(promise, status, code) {
  await assert.rejects(promise, (e) => {
    assert.ok(e instanceof RcrtError, `expected RcrtError, got ${e}`);
    assert.ok(e instanceof Error);
    assert.equal(e.name, 'RcrtError');
    assert.equal(e.status, status, `status (code ${e.code}: ${e.message})`);
    assert.equal(e.code, code, `code (${e.message})`);
    assert.equal(typeof e.message, 'string');
    assert.ok(e.message.length > 0);
    return true;
  });
}
