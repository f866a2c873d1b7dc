// The loopback Range server lives in test/helpers (Node tests use it too); the browser and e2e setups import it from here.
export * from '../helpers/range-server.js';
