// `console` for JavaScript services. QuickJS, as componentize-qjs embeds
// it, has none: a service that logs would fail every call. Built into every
// JavaScript service ahead of its own code (see the build), it sends each
// call to the host's log through wasi:logging, one message per call, at the
// level its name says; the host tags it with the service, version and the
// request's id. When the engine brings a console of its own, that one stays.

import { log as hostLog } from 'wasi:logging/logging@0.1.0-draft';

function show(value) {
  if (typeof value === 'string') {
    return value;
  }
  if (value instanceof Error) {
    return value.stack ? `${value}\n${value.stack}` : String(value);
  }
  try {
    const json = JSON.stringify(value);
    return json === undefined ? String(value) : json;
  } catch (_) {
    // A cycle, a BigInt: as JavaScript prints it.
    return String(value);
  }
}

function at(level) {
  return (...args) => hostLog(level, 'console', args.map(show).join(' '));
}

if (typeof globalThis.console === 'undefined') {
  globalThis.console = {
    log: at('info'),
    info: at('info'),
    debug: at('debug'),
    trace: at('trace'),
    warn: at('warn'),
    error: at('error'),
  };
}
