/**
 * QEMU's curl driver options, as `json:{"file":{"driver":"http","url":…,…}}`
 * or `--image-opts file.driver=https,file.url=…` name them, turned into the
 * http protocol's options. Only what means the same here is taken; options
 * fetch cannot honour (sslverify=off, proxies) are refused rather than
 * silently ignored.
 */
import type { HttpOptions } from '../protocols/http.js';
import { lookupSecret } from '../block/secrets.js';
import { parseSize, UsageError } from './args.js';

const text = (v: unknown) => String(v);

function secret(id: unknown, what: string): string {
  const s = lookupSecret(String(id));
  if (!s) throw new UsageError(`No secret with id '${String(id)}' (for ${what})`);
  return new TextDecoder().decode(s);
}

export function curlOptions(driver: string, options: Record<string, unknown>): HttpOptions {
  const out: HttpOptions = {};
  const headers: Record<string, string> = {};
  let user: string | undefined;
  let password: string | undefined;
  for (const [k, v] of Object.entries(options)) {
    switch (k) {
      case 'readahead':
        out.maxReadAhead = typeof v === 'number' ? v : parseSize('readahead size', text(v));
        break;
      case 'timeout': {
        const sec = Number(v);
        if (!(Number.isInteger(sec) && sec > 0)) throw new UsageError(`timeout parameter is invalid: '${text(v)}'`);
        out.timeoutMs = sec * 1000;
        break;
      }
      case 'cookie':
        headers.Cookie = text(v);
        break;
      case 'cookie-secret':
        headers.Cookie = secret(v, 'cookie-secret');
        break;
      case 'username':
        user = text(v);
        break;
      case 'password-secret':
        password = secret(v, 'password-secret');
        break;
      case 'sslverify':
        if (v === 'on' || v === true) break;
        throw new UsageError(`${driver}: sslverify=off is not supported (TLS certificates are always verified)`);
      default:
        throw new UsageError(`Block protocol '${driver}' doesn't support the option '${k}'`);
    }
  }
  if (user !== undefined || password !== undefined) {
    headers.Authorization = 'Basic ' + Buffer.from(`${user ?? ''}:${password ?? ''}`).toString('base64');
  }
  if (Object.keys(headers).length > 0) out.headers = headers;
  return out;
}
