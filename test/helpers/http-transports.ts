/**
 * The http protocol's transports every Node test of it runs on: the global
 * fetch (as browsers send), the Node transport for plain http (http-wire, as
 * the CLI sends), and node:http (what https URLs take in Node).
 */
import { fetchTransport } from '../../src/protocols/http.js';
import { nodeHttpTransport, nodeHttpModuleTransport } from '../../src/protocols/http-node.js';

export const HTTP_TRANSPORTS = [
  { name: 'fetch', transport: fetchTransport() },
  { name: 'node (plain http: http-wire)', transport: nodeHttpTransport },
  { name: 'node:http', transport: nodeHttpModuleTransport },
];
