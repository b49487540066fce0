// Builds the console into the Python package, which serves it at /console.
import { defineConfig } from "vite";

export default defineConfig({
  base: "/console/",
  build: {
    outDir: "../src/codeactions/console/dist",
    emptyOutDir: true,
    chunkSizeWarningLimit: 1500,
  },
});
