/**
 * One Storage over a local namespace (OPFS, IndexedDB, dropped files, memory)
 * and the web (HttpStorage): names that are http(s) URLs go to the web, the
 * rest to the local namespace. It lets an overlay stored locally sit on a base
 * image served over HTTP (a writable scratch layer over a read-only remote disk).
 *
 * The namespace rule stays: a reference stored inside a local image may name
 * a URL only when the caller opted in with `allowRemoteBacking` (true, or a
 * list of allowed origins). Otherwise opening a local image never makes a
 * network request — an image someone sent you cannot make your tab fetch
 * arbitrary URLs. References inside a remote image resolve with HttpStorage's
 * rules (same origin only), so a remote image never reaches the local
 * namespace either.
 */
import { BlockError } from '../block/errors.js';
import type { BlockNode } from '../block/node.js';
import type { Storage } from '../block/open.js';
import type { HttpStorage } from './http.js';

const WEB = /^https?:\/\//i;

export interface CompositeOptions {
  /** May local images name http(s) backing files: no (default), yes, or only on these origins ("https://example.org"). */
  allowRemoteBacking?: boolean | string[];
}

export class CompositeStorage implements Storage {
  readonly name: string;

  constructor(
    readonly local: Storage,
    readonly remote: HttpStorage,
    readonly options: CompositeOptions = {},
  ) {
    this.name = `${local.name}+${remote.name}`;
  }

  private route(filename: string): Storage {
    return WEB.test(filename) ? this.remote : this.local;
  }

  openProtocol(filename: string, options: { readOnly: boolean; create?: boolean }): Promise<BlockNode> {
    return this.route(filename).openProtocol(filename, options);
  }

  async createFile(filename: string): Promise<void> {
    const s = this.route(filename);
    if (!s.createFile) throw new BlockError('EROFS', `Could not create '${filename}': the ${s.name} storage cannot create files`);
    return s.createFile(filename);
  }

  async removeFile(filename: string): Promise<void> {
    const s = this.route(filename);
    if (!s.removeFile) throw new BlockError('EROFS', `Could not remove '${filename}': the ${s.name} storage cannot remove files`);
    return s.removeFile(filename);
  }

  absolute(filename: string): string {
    return WEB.test(filename) ? filename : (this.local.absolute?.(filename) ?? filename);
  }

  resolve(from: string, reference: string): string {
    if (WEB.test(from)) return this.remote.resolve(from, reference);
    if (!WEB.test(reference)) return this.local.resolve(from, reference);
    const url = this.remote.url(reference);
    const allow = this.options.allowRemoteBacking ?? false;
    const origin = new URL(url).origin;
    if (allow === true || (Array.isArray(allow) && allow.includes(origin))) return url;
    throw new BlockError(
      'EPERM',
      `${from}: refusing to open '${reference}': a ${this.local.name} image may name a remote backing file only when allowRemoteBacking permits ${origin}`,
    );
  }
}
