// Errors of the ringbroker binding: one Error subclass per C API status, each with a
// stable `code` ("ERR_RINGBROKER_" + the status name of include/ringbroker.h) and the
// numeric `status`. Owns: the status table. Never: invents statuses the C API lacks.
'use strict';

/** Status numbers and names, as include/ringbroker.h defines them. */
const STATUSES = Object.freeze({
  MALFORMED: 1,
  FRAME_TOO_LARGE: 2,
  UNKNOWN_OP: 3,
  OUT_OF_STATE: 4,
  VERSION_UNSUPPORTED: 5,
  AUTH_FAILED: 6,
  NOT_FOUND: 7,
  ALREADY_EXISTS: 8,
  INVALID_ARGUMENT: 9,
  NO_RESPONDERS: 10,
  TIMEOUT: 11,
  BACKPRESSURE: 12,
  SHUTTING_DOWN: 13,
  REFUSED: 14,
  LOCKED: 15,
  UNROUTABLE: 16,
  SLOW_CONSUMER: 17,
  IDLE_TIMEOUT: 18,
  INTERNAL: 19,
  ID_IN_USE: 20,
  DISCONNECTED: 21,
  WOULD_BLOCK: 100,
  WRONG_KIND: 101,
});

/**
 * The base class of every error the binding raises for a ringbroker status.
 * `code` is stable (`ERR_RINGBROKER_NOT_FOUND`, ...); `status` is the C status number.
 */
class RingbrokerError extends Error {
  constructor(message, status = STATUSES.INTERNAL) {
    super(message);
    const name = statusName(status);
    /** The C API's status number. */
    this.status = status;
    /** `ERR_RINGBROKER_` + the status name. */
    this.code = `ERR_RINGBROKER_${name}`;
  }
}
RingbrokerError.prototype.name = 'RingbrokerError';

const byStatus = new Map();
const classes = { RingbrokerError };

function className(name) {
  return name.toLowerCase().split('_')
    .map((w) => w[0].toUpperCase() + w.slice(1)).join('') + 'Error';
}

for (const [name, status] of Object.entries(STATUSES)) {
  const cls = {
    [className(name)]: class extends RingbrokerError {
      constructor(message, s = status) {
        super(message, s);
      }
    },
  }[className(name)];
  cls.prototype.name = className(name);
  cls.status = status;
  cls.code = `ERR_RINGBROKER_${name}`;
  byStatus.set(status, cls);
  classes[className(name)] = cls;
}

/** The status name (`"NOT_FOUND"`) of `status`, or `"UNKNOWN"`. */
function statusName(status) {
  for (const [name, s] of Object.entries(STATUSES)) if (s === status) return name;
  return 'UNKNOWN';
}

/** The error for `status` with `message`: the status's subclass of RingbrokerError. */
function errorFor(status, message) {
  const cls = byStatus.get(status);
  const text = message || statusName(status);
  return cls ? new cls(text, status) : new RingbrokerError(text, status);
}

module.exports = { STATUSES, RingbrokerError, errorFor, statusName, ...classes };
