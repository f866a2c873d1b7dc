/**
 * The http protocol's transport in Node: node:http / node:https with
 * keep-alive connections, the body's chunks copied straight into the
 * caller's buffer from the socket's 'data' events.
 *
 * Why not Node's global fetch: its per-request machinery (undici's Request,
 * Response, header lists, a WHATWG stream per body, a promise per chunk)
 * costs more CPU than the bytes on a fast link: a sequential read made of
 * hundreds of ranged GETs ran at a third of one bare fetch of the whole file.
 * Here a request costs one ClientRequest on a socket the agent keeps open,
 * and one promise for the whole body.
 *
 * node:http and node:https load on the first request, so start-up of the CLI
 * (which never sends one for local images) does not pay for them.
 */
import { createRequire } from 'node:module';
import type * as Http from 'node:http';
import { BodySink, type HttpReply, type HttpRequestInit, type HttpTransport } from './http.js';
import { wireRequest, timeoutError, DRAIN_LIMIT } from './http-wire.js';

type Mods = { http: typeof Http; https: typeof import('node:https') };
let mods: Mods | undefined;
let agents: { http: Http.Agent; https: Http.Agent } | undefined;

function load(): { mods: Mods; agents: { http: Http.Agent; https: Http.Agent } } {
  if (!mods) {
    const req = createRequire(import.meta.url);
    mods = { http: req('node:http') as typeof Http, https: req('node:https') as typeof import('node:https') };
  }
  // Idle sockets are unref'd by the agent: a CLI run ends without closing them.
  agents ??= { http: new mods.http.Agent({ keepAlive: true }), https: new mods.https.Agent({ keepAlive: true, ...deferredCa() }) };
  return { mods, agents };
}

/**
 * NODE_EXTRA_CA_CERTS that the CLI's launcher kept from Node's start-up
 * (vite.cli.config.ts; src/cli/bin.ts leaves the path under this symbol):
 * the https agent trusts them on top of Node's bundled roots, as Node would
 * have. An unreadable file is ignored with Node's warning.
 */
function deferredCa(): { ca?: string[] } {
  const file = (globalThis as Record<symbol, unknown>)[Symbol.for('blocktab.deferredExtraCaCerts')];
  if (typeof file !== 'string') return {};
  const req = createRequire(import.meta.url);
  const tls = req('node:tls') as typeof import('node:tls');
  try {
    const extra = (req('node:fs') as typeof import('node:fs')).readFileSync(file, 'latin1');
    return { ca: [...tls.rootCertificates, extra] };
  } catch (e) {
    process.emitWarning(`Ignoring extra certs from \`${file}\`, load failed: ${e instanceof Error ? e.message : String(e)}`);
    return {};
  }
}

function send(url: string, init: HttpRequestInit): Promise<HttpReply> {
  const { mods, agents } = load();
  const secure = url.startsWith('https:');
  const mod = secure ? mods.https : mods.http;
  return new Promise<HttpReply>((resolve, reject) => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    let failure: Error | undefined;
    const req = mod.request(url, { method: init.method, headers: init.headers, agent: secure ? agents.https : agents.http });
    const stop = () => {
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
    };
    if (init.timeoutMs > 0) {
      timer = setTimeout(() => {
        failure = timeoutError(init.timeoutMs);
        req.destroy(failure);
      }, init.timeoutMs);
    }
    req.on('error', (e) => {
      stop();
      reject(failure ?? e);
    });
    req.once('response', (res) => {
      let settled = false;
      if (init.method === 'HEAD' || res.statusCode === 204 || res.statusCode === 304) {
        // No body: let 'end' come so the socket goes back to the agent.
        settled = true;
        stop();
        res.resume();
      }
      resolve({
        status: res.statusCode ?? 0,
        statusText: res.statusMessage ?? '',
        header(name) {
          const v = res.headers[name];
          return v === undefined ? null : Array.isArray(v) ? v.join(', ') : v;
        },
        cancel() {
          if (settled) return;
          settled = true;
          stop();
          const len = Number(res.headers['content-length']);
          if (res.complete) return;
          if (Number.isFinite(len) && len <= DRAIN_LIMIT) res.resume();
          else res.destroy();
        },
        readInto(parts) {
          settled = true;
          return new Promise<number>((done, fail) => {
            if (res.destroyed) {
              stop();
              fail(failure ?? new Error('the connection closed before the body was read'));
              return;
            }
            const sink = new BodySink(parts);
            let over = false;
            res.on('data', (c: Buffer) => {
              if (over) return;
              if (!sink.push(c)) {
                over = true;
                stop();
                res.destroy();
                done(-1);
              }
            });
            res.once('end', () => {
              stop();
              if (!over) done(sink.length);
            });
            // A connection that breaks mid-body: 'aborted' / 'error' (or a 'close' before 'end').
            res.on('error', (e) => {
              stop();
              if (!over) fail(failure ?? e);
            });
            res.once('close', () => {
              stop();
              if (!over && !res.complete) fail(failure ?? new Error('the connection closed before the end of the body'));
            });
          });
        },
      });
    });
    req.end();
  });
}

/** node:http / node:https for every URL (one keep-alive agent each, shared by every storage); https URLs always take it. */
export const nodeHttpModuleTransport: HttpTransport = send;

/**
 * The Node transport: plain http through the small client of http-wire.ts
 * (the socket's bytes copied once, into the caller's parts), https and URLs
 * with credentials in them through node:https / node:http.
 */
export const nodeHttpTransport: HttpTransport = (url, init) =>
  url.startsWith('http:') && !/^http:\/\/[^/?#]*@/.test(url) ? wireRequest(url, init) : send(url, init);
