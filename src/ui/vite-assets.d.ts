// vite's `?url` imports: the asset's URL in the build (the app is built by vite; tsc only typechecks src/ui).
declare module '*.wasm?url' {
  const url: string;
  export default url;
}
