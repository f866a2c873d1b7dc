/**
 * The map's kinds and colours, in one place for the canvas, the legend and
 * the chain diagram. Colours differ in lightness as well as hue, so the map
 * reads without colour vision too.
 */

export const enum Kind {
  Loading = 0,
  Unallocated = 1,
  Data = 2,
  Zero = 3,
  Compressed = 4,
  /** Kind of backing layer 1; layer d is Backing + d - 1. */
  Backing = 5,
}

/** Deepest backing layer with its own colour; deeper layers share the last one. */
export const MAX_LAYER_COLOURS = 6;
export const KIND_COUNT = Kind.Backing + MAX_LAYER_COLOURS;

const LAYER_COLOURS = ['#e07b00', '#b35900', '#8a4300', '#c99a2e', '#8f6d1f', '#5e4712'];

export function layerColour(depth: number): string {
  return LAYER_COLOURS[Math.min(depth, MAX_LAYER_COLOURS) - 1]!;
}

export function kindColour(kind: number): string {
  switch (kind) {
    case Kind.Loading:
      return '#c4c9d0';
    case Kind.Unallocated:
      return '#eef1f4';
    case Kind.Data:
      return '#1f5fbf';
    case Kind.Zero:
      return '#8fd19e';
    case Kind.Compressed:
      return '#7b3fc4';
    default:
      return layerColour(kind - Kind.Backing + 1);
  }
}

export function kindName(kind: number): string {
  switch (kind) {
    case Kind.Loading:
      return 'not read yet';
    case Kind.Unallocated:
      return 'unallocated';
    case Kind.Data:
      return 'data';
    case Kind.Zero:
      return 'zero';
    case Kind.Compressed:
      return 'compressed data';
    default: {
      const d = kind - Kind.Backing + 1;
      return d >= MAX_LAYER_COLOURS ? `from backing layer ${d}+` : `from backing layer ${d}`;
    }
  }
}
